// A Durable Object chat room, the way Cloudflare documents it with the
// WebSocket Hibernation API: the Worker routes /room/{id} to the object
// named {id}; the object accepts each socket with ctx.acceptWebSocket (so it
// may be evicted while sockets stay open) and relays every message to every
// socket of the room. Nothing is stored: spike's rooms store each event
// before sending it, which this peer does not do.
export class Room {
  constructor(ctx) {
    this.ctx = ctx;
  }
  async fetch(request) {
    if (request.headers.get("Upgrade") !== "websocket") {
      return new Response("expected a WebSocket", { status: 426 });
    }
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }
  webSocketMessage(ws, message) {
    for (const peer of this.ctx.getWebSockets()) {
      try {
        peer.send(message);
      } catch {
        // A socket that closed meanwhile.
      }
    }
  }
  webSocketClose(ws, code, reason) {
    try {
      ws.close(code, reason);
    } catch {}
  }
}

export default {
  fetch(request, env) {
    const url = new URL(request.url);
    const match = url.pathname.match(/^\/room\/([^/]+)$/);
    if (!match) return new Response("not found", { status: 404 });
    const room = env.ROOMS.get(env.ROOMS.idFromName(match[1]));
    return room.fetch(request);
  },
};
