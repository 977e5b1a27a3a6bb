// Pieces of the IPC records tests build by hand (src/server/ipc.ts).
import type { ClientRecord } from '../../src/server/ipc.js';

/** A ClientRecord's accounting fields for a client that has done nothing yet. */
export const NO_ACCOUNTING: Pick<ClientRecord, 'smGroups' | 'gpuTimeMs' | 'kernels' | 'bytesHtoD' | 'bytesDtoH' | 'memoryPeak' | 'errors' | 'socketCalls' | 'socketPosts' | 'ringRecords'> = {
  smGroups: [],
  gpuTimeMs: 0,
  kernels: 0,
  bytesHtoD: '0',
  bytesDtoH: '0',
  memoryPeak: '0',
  errors: 0,
  socketCalls: 0,
  socketPosts: 0,
  ringRecords: 0,
};
