// A clock for the software GPU (SimOptions.clock) that a test can hold still. The sim's time is the
// wall clock: an op enqueued on an idle stream starts at the moment of its enqueue, so a host stall
// between two enqueues (a busy CI machine descheduling the test) is a gap on the device's timeline
// too, and two brackets of "the same" work recorded a few host calls apart differ by it; a check
// meant to run "while the kernel runs" finds it finished if the host stalled past its end. Holding
// the clock while a test enqueues puts every op of that section at one simulated instant, and
// advance() moves the device exactly as far as the test says: what the test then reads back (event
// times, spans, query()) is the scheduler's schedule, exact to the float, however long the host
// took. Released, the clock runs on from where it was held, at performance.now()'s rate: the held
// work then takes its own duration in real time from that moment, as if the host had enqueued it
// all at once (jumping to the wall clock instead would complete, at the release, every kernel
// shorter than the time the host spent enqueueing, and a test of "this waits for the kernel"
// could no longer fail). Its readings are then behind performance.now() by the time held, so
// they compare with each other (events, spin_timed stamps), not with the host's clock.

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
  /** Lets it run again from its held reading, at performance.now()'s rate. */
  release(): void;
}

export function holdableClock(): HoldableClock {
  let held: number | undefined;
  /** How far behind performance.now() the clock runs: the time it spent held, net of advance(). */
  let behind = 0;
  const now = (): number => held ?? performance.now() - behind;
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
      if (held === undefined) return;
      behind = performance.now() - held;
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
