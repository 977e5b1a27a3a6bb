// Sends one line of the command language to the control daemon, as `echo CMD | openmps-control`
// does, for programs (the demo, tests, the openmps CLI).
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { CudaError } from '../cuda/cuda-error.js';
import { FramedSocket, handshakeError } from '../transport/framed-socket.js';

export interface ControlReply {
  readonly output: string;
  readonly ok: boolean;
}

export async function controlCommand(pipeDirectory: string, line: string): Promise<ControlReply> {
  const socket = netConnect(join(pipeDirectory, 'control'));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (err) => {
      reject(new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', 'openmps-control', `Cannot find openmps control daemon process in ${pipeDirectory} (${err.message})`));
    });
  });
  const channel = new FramedSocket(socket);
  try {
    return await channel.request('CONTROL_COMMAND', { line });
  } catch (err) {
    throw handshakeError(err, channel, 'openmps-control', 'the control daemon');
  } finally {
    channel.close();
  }
}
