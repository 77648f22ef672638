using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .rooms) ],
  sockets = [ (name = "http", address = "127.0.0.1:8791", http = (), service = "main") ],
);

const rooms :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "rooms.js") ],
  compatibilityDate = "2024-01-01",
  durableObjectNamespaces = [ (className = "Room", uniqueKey = "spike-bench-rooms") ],
  durableObjectStorage = (inMemory = void),
  bindings = [ (name = "ROOMS", durableObjectNamespace = "Room") ],
);
