// A clock for the software GPU (SimOptions.clock) that a test can hold still. The sim's time is the
// wall clock: an op enqueued on an idle stream starts at the moment of its enqueue, so a host stall
// between two enqueues (a busy CI machine descheduling the test) is a gap on the device's timeline
// too, and two brackets of "the same" work recorded a few host calls apart differ by it; a check
// meant to run "while the kernel runs" finds it finished if the host stalled past its end. Holding
// the clock while a test enqueues puts every op of that section at one simulated instant, and
// advance() moves the device exactly as far as the test says: what the test then reads back (event
// times, spans, query()) is the scheduler's schedule, exact to the float, however long the host
// took. Released, the clock follows performance.now() again (never going back), and the held work
// runs and completes in real time as usual.

export interface HoldableClock {
  /** The clock to give createSimPlatform({ clock }). */
  readonly now: () => number;
  /** Stops the clock at its current reading until release(). */
  hold(): void;
  /**
   * Moves a held clock `ms` forward (and holds it there): the device has run exactly that long, so
   * a test can look at it mid-kernel however slow the host is.
   */
  advance(ms: number): void;
  /** Lets it follow performance.now() again, from no earlier than where it was held. */
  release(): void;
}

export function holdableClock(): HoldableClock {
  let held: number | undefined;
  let last = 0;
  const now = (): number => {
    last = held ?? Math.max(last, performance.now());
    return last;
  };
  return {
    now,
    hold: () => {
      held ??= now();
    },
    advance: (ms) => {
      if (held === undefined) throw new Error('advance() needs a held clock');
      held += ms;
    },
    release: () => {
      if (held !== undefined && held > last) last = held;
      held = undefined;
    },
  };
}

/** Runs `enqueue` with the clock held, releasing it even when `enqueue` throws. */
export function atOneInstant<T>(clock: HoldableClock, enqueue: () => T): T {
  clock.hold();
  try {
    return enqueue();
  } finally {
    clock.release();
  }
}
