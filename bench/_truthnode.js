// Node `net` roles for bench/truth.py; each logs its own pid, fd, port and name as ground truth.
//
//   node _truthnode.js server PORT LOG TIMEOUT          echo each line back; ends when the client ends
//   node _truthnode.js client PORT RATE SECONDS LOG HOLD
//                                     RATE connections/s: connect, write a line, end; a share HOLD
//                                     of them (evenly spread) holds the socket 20-50 ms before ending
//
// One JSON line per connection is appended to LOG (and a `ready` line first). The fd comes from
// the socket's libuv handle (`socket._handle.fd`, Linux). All traffic is on 127.0.0.1; every
// loop is bounded in count and time.
"use strict";
const fs = require("fs");
const net = require("net");

const MAX_SECONDS = 600;
const [role, portArg, ...rest] = process.argv.slice(2);
const port = Number(portArg);
const comm = fs.readFileSync("/proc/self/comm", "utf8").trim();
const pid = process.pid;

function opener(path) {
  const fd = fs.openSync(path, "a");
  return (rec) => fs.writeSync(fd, JSON.stringify(rec) + "\n");
}

function fdOf(sock) {
  return sock._handle && typeof sock._handle.fd === "number" ? sock._handle.fd : -1;
}

function bound(seconds) {
  setTimeout(() => process.exit(3), Math.min(seconds, MAX_SECONDS + 60) * 1000).unref();
  process.on("SIGTERM", () => process.exit(0));
}

if (role === "server") {
  const log = opener(rest[0]);
  bound(Number(rest[1]));
  const srv = net.createServer((sock) => {
    log({ proto: "tcp", pid, fd: fdOf(sock), client_port: sock.remotePort, t: Date.now() / 1000, comm });
    sock.on("data", (d) => sock.write(d));
    sock.on("error", () => {});
  });
  srv.listen(port, "127.0.0.1", () => log({ ready: true, pid, listen_fd: fdOf(srv), comm }));
  // keep running until the timer or SIGTERM
  setInterval(() => {}, 1 << 30);
} else if (role === "client") {
  const rate = Number(rest[0]);
  const seconds = Math.min(Number(rest[1]), MAX_SECONDS);
  const log = opener(rest[2]);
  const holdShare = rest[3] === undefined ? 0.5 : Number(rest[3]);
  bound(seconds + 30);
  const n = Math.floor(rate * seconds);
  const t0 = Date.now();
  let started = 0;
  let done = 0;
  const one = (i) => {
    const held = Math.floor((i + 1) * holdShare) > Math.floor(i * holdShare);
    const hold = held ? 20 + Math.random() * 30 : 0;
    const start = Date.now() / 1000;
    const rec = { proto: "tcp", pid, hold: hold > 0, t: start, comm };
    let echoed = 0;
    const sock = net.connect({ port, host: "127.0.0.1" }, () => {
      rec.fd = fdOf(sock);
      rec.client_port = sock.localPort;
      sock.write("hello from node " + i + "\n");
      if (hold) setTimeout(() => sock.end(), hold);
      else sock.end();
    });
    sock.on("data", (d) => (echoed += d.length));
    sock.on("error", (e) => (rec.error = String(e)));
    sock.on("close", () => {
      rec.end = Date.now() / 1000;
      rec.ok = echoed > 0 && !rec.error;
      log(rec);
      done += 1;
    });
  };
  const tick = () => {
    const due = Math.min(n, Math.floor(((Date.now() - t0) / 1000) * rate) + 1);
    while (started < due) one(started++);
    if (started < n && Date.now() - t0 < (seconds + 5) * 1000) setTimeout(tick, 2);
    else {
      const wait = () => (done >= started || Date.now() - t0 > (seconds + 10) * 1000 ? process.exit(0) : setTimeout(wait, 20));
      wait();
    }
  };
  tick();
} else {
  console.error("unknown role " + role);
  process.exit(2);
}
