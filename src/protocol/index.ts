// The openmps wire protocol: frames, field codec and typed messages (docs/protocol.md).
export * from './codec.js';
export * from './frame.js';
export * from './messages.js';
