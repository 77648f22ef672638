// The same hello world as tests/fixtures/plain-hello, as a Worker.
export default {
  fetch() {
    return new Response("Hello, world!\n", { headers: { "content-type": "text/plain" } });
  },
};
