// The hello of bench/http_hello.sh as a JavaScript component, written
// against wasi:http itself (StarlingMonkey's `fetch` event cannot serve a
// second request in the same instance, bytecodealliance/StarlingMonkey#247).
import { Fields, OutgoingBody, OutgoingResponse, ResponseOutparam } from 'wasi:http/types@0.2.10';

const hello = new TextEncoder().encode('Hello, world!\n');
const textPlain = new TextEncoder().encode('text/plain');

export const incomingHandler = {
  handle(_request, responseOut) {
    const response = new OutgoingResponse(Fields.fromList([['content-type', textPlain]]));
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(hello);
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
