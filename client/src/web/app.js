// p2pchat's web page: a view on the running client's engine through the local
// API (docs/api.md) over a WebSocket. The conversation in front, unread counts
// and verified marks are the engine's (its `conversations` events); the page
// keeps only what it shows. Every text is set with textContent: nothing a peer
// sends is ever parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // The secret has done its work (the cookie holds the session): out of the
  // address bar and the history.
  if (location.search) history.replaceState(null, "", "/");

  const MAX_ENTRIES = 2000;
  const state = { front: null, items: [], convs: new Map(), ws: null, nextId: 1 };

  function conv(n) {
    if (!state.convs.has(n)) {
      state.convs.set(n, {
        entries: [], sas: null, verified: false, peer: null, kind: null,
        members: new Map(), warnings: [], transfers: new Map(), historyShown: 0,
      });
    }
    return state.convs.get(n);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function send(cmd) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      notice("not connected to the client");
      return;
    }
    cmd.api = 1;
    cmd.id = state.nextId++;
    state.ws.send(JSON.stringify(cmd));
  }

  function notice(text) {
    const li = el("li", "notice", text);
    const list = $("notices");
    list.append(li);
    while (list.children.length > 5) list.firstChild.remove();
  }

  function time(ms) {
    const d = ms ? new Date(ms) : new Date();
    return d.toLocaleTimeString();
  }

  // ---- entries of a conversation ------------------------------------------

  function add(n, entry) {
    if (n === null) {
      notice(entry.text || "");
      return entry;
    }
    const c = conv(n);
    c.entries.push(entry);
    if (c.entries.length > MAX_ENTRIES) c.entries.shift().node?.remove();
    if (n === state.front) $("messages").append(node(entry));
    return entry;
  }

  function node(entry) {
    if (entry.node) return entry.node;
    let li;
    switch (entry.kind) {
      case "msg": {
        li = el("li", "msg" + (entry.own ? " own" : ""));
        li.dataset.kind = entry.own ? "own" : "peer";
        li.append(el("span", "at", time(entry.at) + " "), el("span", "from", entry.from), el("span", "text", entry.text));
        if (entry.pending) li.append(el("span", "pending", " (not delivered yet)"));
        break;
      }
      case "room": {
        li = el("li", "info");
        li.append(el("span", null, entry.label + ": "), el("span", entry.cls, entry.code), el("span", null, " " + entry.after));
        break;
      }
      case "transfer":
        li = transferNode(entry);
        break;
      case "admission": {
        li = el("li", "info", entry.text + " ");
        const admit = el("button", "admit", "Let them in");
        admit.type = "button";
        admit.addEventListener("click", () => send({ cmd: "admit", conversation: entry.n }));
        const deny = el("button", "deny", "Turn away");
        deny.type = "button";
        deny.addEventListener("click", () => send({ cmd: "deny", conversation: entry.n }));
        li.append(admit, " ", deny);
        break;
      }
      default:
        li = el("li", entry.kind, entry.text);
    }
    entry.node = li;
    return li;
  }

  function transferNode(t) {
    const li = el("li", "transfer");
    li.dataset.direction = t.direction;
    li.dataset.id = String(t.id);
    t.label = el("span", "name", "");
    t.bar = el("progress");
    t.bar.max = Math.max(1, t.total || 1);
    t.bar.value = 0;
    t.status = el("span", "state", "");
    li.append(t.label, t.bar, t.status);
    if (t.direction === "receive" && t.offer) {
      const accept = el("button", "accept", "Accept");
      accept.type = "button";
      accept.addEventListener("click", () => send({ cmd: "accept_file", conversation: t.n, file: t.id }));
      const reject = el("button", "reject", "Reject");
      reject.type = "button";
      reject.addEventListener("click", () => send({ cmd: "reject_file", conversation: t.n, file: t.id }));
      t.buttons = el("span", "buttons");
      t.buttons.append(" ", accept, " ", reject);
      li.append(t.buttons);
    }
    updateTransfer(t);
    return li;
  }

  function updateTransfer(t) {
    if (!t.label) return;
    const verb = t.direction === "send" ? "Sending" : (t.offer ? t.from + " offers" : "Receiving");
    t.label.textContent = verb + " " + t.name + " (" + size(t.total) + ")";
    t.bar.max = Math.max(1, t.total || 1);
    t.bar.value = Math.min(t.bytes || 0, t.bar.max);
    t.status.textContent = t.state || "";
    if (t.buttons && t.state) t.buttons.remove();
  }

  function transfer(n, direction, id, fields) {
    const c = conv(n);
    const key = direction + ":" + id;
    let t = c.transfers.get(key);
    if (!t) {
      t = { kind: "transfer", n, direction, id, name: "", total: 0, bytes: 0, state: "" };
      c.transfers.set(key, t);
      Object.assign(t, fields);
      add(n, t);
    } else {
      Object.assign(t, fields);
    }
    updateTransfer(t);
    return t;
  }

  function size(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Number(n) || 0;
    let u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return u === 0 ? v + " B" : v.toFixed(1) + " " + units[u];
  }

  // ---- what the engine says -------------------------------------------------

  function handle(ev) {
    if (ev.event === undefined && ev.reply !== undefined) {
      if (!ev.ok) notice("refused: " + ev.error.text);
      return;
    }
    const n = ev.conversation ? ev.conversation.number : null;
    const c = n === null ? null : conv(n);
    switch (ev.event) {
      case "hello":
        $("status").textContent = "connected to " + ev.client;
        break;
      case "bye":
        $("status").textContent = "the client dropped this page: " + ev.reason;
        break;
      case "conversations":
        state.front = ev.front;
        state.items = ev.items;
        renderList();
        renderMain();
        break;
      case "room":
        add(n, { kind: "room", label: "Room code", code: ev.room, cls: "room-code", after: "— give it to the other person." });
        break;
      case "token":
        add(n, { kind: "room", label: "Connection token", code: ev.token, cls: "token", after: "— give it to the other person." });
        break;
      case "admission":
        add(n, { kind: "admission", n, text: ev.peer + " (identity " + ev.fingerprint + ", not a contact yet) dialed your token. Security code: " + ev.sas + "." });
        break;
      case "waiting":
        add(n, { kind: "info", text: "Waiting for the other person…" });
        break;
      case "matched":
        add(n, { kind: "info", text: "Found " + ev.peer + "; connecting…" });
        break;
      case "connected":
        c.sas = ev.sas; c.verified = ev.verified; c.peer = ev.peer;
        add(n, { kind: "info", text: "Connected to " + ev.peer + " (" + ev.path + "), end-to-end encrypted. Compare the security code " + ev.sas + " with " + ev.peer + "." });
        if (n === state.front) renderSecurity();
        break;
      case "verify":
        c.sas = ev.sas; c.verified = ev.verified; c.peer = ev.peer;
        if (n === state.front) renderSecurity();
        break;
      case "group_joined":
        c.kind = "group";
        add(n, { kind: "info", text: "In group room " + ev.room + " with " + ev.present + " others here." });
        break;
      case "member_joined":
        c.kind = "group";
        c.members.set(ev.member, { name: ev.peer, sas: ev.sas, verified: ev.verified });
        add(n, { kind: "info", text: ev.peer + " joined (security code " + ev.sas + ")." });
        if (n === state.front) renderSecurity();
        break;
      case "member":
        c.members.set(ev.member, { name: ev.name, sas: ev.sas, verified: ev.verified });
        if (n === state.front) renderSecurity();
        break;
      case "member_left":
        c.members.delete(ev.member);
        add(n, { kind: "info", text: ev.peer + " left: " + ev.reason });
        if (n === state.front) renderSecurity();
        break;
      case "warning":
        if (c) {
          c.warnings.push(ev.text);
          if (n === state.front) renderWarnings();
        } else {
          notice("WARNING: " + ev.text);
        }
        break;
      case "message":
        add(n, { kind: "msg", from: ev.from, text: ev.text, at: ev.sent_at_ms });
        alertBehind(n, ev.from);
        break;
      case "sent":
        add(n, { kind: "msg", own: true, from: "me", text: ev.text, id: ev.id, pending: ev.pending });
        break;
      case "ack":
        for (const e of c.entries) {
          if (e.own && e.id === ev.id && e.pending) {
            e.pending = false;
            e.node?.querySelector(".pending")?.remove();
          }
        }
        break;
      case "group_message":
        add(n, { kind: "msg", own: ev.own, from: ev.own ? "me" : ev.from, text: ev.text, at: ev.sent_at_ms });
        if (!ev.own) alertBehind(n, ev.from);
        break;
      case "history":
        showHistory(n, ev);
        break;
      case "file_offer":
        transfer(n, "receive", ev.id, { offer: true, from: ev.from, name: ev.name, total: ev.size });
        alertBehind(n, ev.from);
        break;
      case "progress":
        transfer(n, ev.direction, ev.id, { name: ev.name, total: ev.total, bytes: ev.bytes, state: ev.bytes < ev.total ? Math.floor(100 * ev.bytes / Math.max(1, ev.total)) + "%" : "" });
        break;
      case "file_done": {
        const t = transfer(n, ev.direction, ev.id, { name: ev.name });
        t.bytes = t.total;
        t.state = ev.direction === "receive" ? "done: saved as " + (ev.path || "") : "done: sent";
        updateTransfer(t);
        break;
      }
      case "file_stopped": {
        const t = transfer(n, ev.direction, ev.id, { name: ev.name });
        t.state = "stopped: " + ev.reason;
        updateTransfer(t);
        break;
      }
      case "contacts":
        renderContacts(ev.contacts);
        break;
      case "peer":
        add(n, { kind: "info", text: ev.name + " at " + ev.addr + ", path " + ev.path + ", security code " + ev.sas });
        break;
      case "reconnecting":
        add(n, { kind: "info", text: "Connection lost (" + ev.reason + "); reconnecting…" });
        break;
      case "disconnected":
        add(n, { kind: "info", text: "Session ended: " + ev.reason });
        break;
      case "closed":
        add(n, { kind: "info", text: "Conversation closed: " + ev.reason });
        break;
      case "rejected":
        add(n, { kind: "info", text: "Turned away a connection from " + ev.addr + " (" + ev.reason + ")." });
        break;
      case "error":
        add(n, { kind: "error", text: "error: " + ev.text });
        break;
      case "info":
        add(n, { kind: "info", text: ev.text });
        break;
      default:
        break;
    }
  }

  function showHistory(n, ev) {
    if (n === null) return;
    const c = conv(n);
    const older = ev.lines.map((l) => ({
      kind: "msg", own: l.outgoing, from: l.outgoing ? "me" : l.from, text: l.text, at: l.at_ms, history: true,
    }));
    c.historyShown += older.length;
    const mark = { kind: "info", text: ev.more ? "— earlier messages —" : "— the start of the history —" };
    c.entries.unshift(mark, ...older);
    if (n === state.front) renderMain();
  }

  // A message arrived where the person is not looking: a notification
  // naming the sender and the conversation's number, never the text nor the
  // label. A notification leaves the page (a locked screen shows it, the
  // desktop keeps it), and a room's or a group's label is its room code, the
  // password of its key exchange; the terminal's notification says as little.
  function alertBehind(n, from) {
    if (n === state.front && !document.hidden) return;
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      new Notification("p2pchat: conversation " + n, { body: "New message from " + from, tag: "p2pchat-" + n });
    } catch (e) {
      // Some browsers only notify from a service worker: the unread count stays.
    }
  }

  // ---- rendering ----------------------------------------------------------

  function renderList() {
    const list = $("conversations");
    list.replaceChildren();
    for (const item of state.items) {
      const li = el("li");
      const b = el("button", "conv");
      b.type = "button";
      b.dataset.number = String(item.number);
      b.setAttribute("aria-current", item.number === state.front ? "true" : "false");
      const unread = el("span", "unread", item.unread);
      unread.hidden = !item.unread;
      unread.setAttribute("aria-label", item.unread + " unread");
      b.append(el("span", "number", item.number), el("span", "label", item.label), el("span", "state", item.state + (item.verified ? ", verified" : "")), unread);
      b.addEventListener("click", () => send({ cmd: "switch", conversation: item.number }));
      li.append(b);
      list.append(li);
    }
  }

  function renderMain() {
    const item = state.items.find((i) => i.number === state.front);
    $("title").textContent = item ? item.number + " · " + item.label : "No conversation";
    const messages = $("messages");
    messages.replaceChildren();
    if (item) {
      const c = conv(item.number);
      if (item.kind === "group") c.kind = "group";
      c.verified = c.verified || item.verified;
      for (const e of c.entries) messages.append(node(e));
      messages.scrollTop = messages.scrollHeight;
    }
    renderSecurity();
    renderWarnings();
  }

  function renderSecurity() {
    const c = state.front === null ? null : conv(state.front);
    const members = $("members");
    members.replaceChildren();
    const group = c && c.kind === "group";
    $("sas").textContent = c && c.sas && !group ? c.sas : "—";
    $("verified-mark").textContent = c && c.verified && !group ? "verified" : "";
    $("verify").hidden = !c || group || !c.sas || c.verified;
    if (!group) return;
    for (const [, m] of c.members) {
      const li = el("li", "member", m.name + ": security code " + m.sas + (m.verified ? " (verified) " : " "));
      if (!m.verified) {
        const b = el("button", "verify-member", "Codes match");
        b.type = "button";
        b.addEventListener("click", () => send({ cmd: "verify", conversation: state.front, member: m.name, confirm: true }));
        li.append(b);
      }
      members.append(li);
    }
  }

  function renderWarnings() {
    const box = $("warnings");
    box.replaceChildren();
    const c = state.front === null ? null : conv(state.front);
    if (!c) return;
    for (const w of c.warnings) box.append(el("p", "warning", "WARNING: " + w));
  }

  function renderContacts(contacts) {
    const list = $("contacts");
    list.replaceChildren();
    if (!contacts.length) list.append(el("li", "hint", "No contacts yet: meet someone once with a room code or a token."));
    for (const ct of contacts) {
      const li = el("li", "contact");
      li.append(el("span", null, ct.name + (ct.verified ? " (verified)" : "") + (ct.online ? " — online " : " — not linked ")));
      const b = el("button", "talk", "Talk");
      b.type = "button";
      b.addEventListener("click", () => send({ cmd: "contact", contact: ct.fingerprint }));
      li.append(b);
      list.append(li);
    }
  }

  // ---- files --------------------------------------------------------------

  async function offer(file) {
    const n = state.front;
    if (n === null || !file) return;
    notice("Uploading " + file.name + " to the client…");
    try {
      const r = await fetch("/api/upload?name=" + encodeURIComponent(file.name), {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body: file,
      });
      if (!r.ok) throw new Error((await r.text()).trim() || r.status);
      const up = await r.json();
      send({ cmd: "offer_file", conversation: n, upload: up.upload });
    } catch (e) {
      notice("The upload failed: " + e.message);
    }
  }

  // ---- wiring -------------------------------------------------------------

  function connect() {
    const ws = new WebSocket("ws://" + location.host + "/api/ws");
    state.ws = ws;
    ws.addEventListener("message", (m) => {
      try {
        handle(JSON.parse(m.data));
      } catch (e) {
        notice("a message the page could not read: " + e.message);
      }
    });
    ws.addEventListener("close", (e) => {
      $("status").textContent = "disconnected from the client" + (e.reason ? ": " + e.reason : "") + " — reload to try again";
    });
  }

  function onSubmit(form, fn) {
    $(form).addEventListener("submit", (e) => {
      e.preventDefault();
      fn();
    });
  }

  $("new-room").addEventListener("click", () => send({ cmd: "new", group: false }));
  $("new-group").addEventListener("click", () => send({ cmd: "new", group: true }));
  $("make-token").addEventListener("click", () => send({ cmd: "token" }));
  onSubmit("join-form", () => {
    const code = $("join-code").value.trim();
    if (code) send({ cmd: "room", code });
    $("join-code").value = "";
  });
  $("join-group").addEventListener("click", () => {
    const code = $("join-code").value.trim();
    if (code) send({ cmd: "group", code });
    $("join-code").value = "";
  });
  onSubmit("connect-form", () => {
    const token = $("connect-token").value.trim();
    if (token) send({ cmd: "connect", token });
    $("connect-token").value = "";
  });
  $("contacts-refresh").addEventListener("click", () => send({ cmd: "contacts" }));
  $("close").addEventListener("click", () => {
    if (state.front !== null) send({ cmd: "close", conversation: state.front });
  });
  $("verify").addEventListener("click", () => {
    if (state.front !== null) send({ cmd: "verify", conversation: state.front, confirm: true });
  });
  $("earlier").addEventListener("click", () => {
    if (state.front === null) return;
    const c = conv(state.front);
    send({ cmd: "history", conversation: state.front, limit: 50, before: c.historyShown });
  });
  onSubmit("composer", () => {
    const text = $("text").value;
    if (state.front !== null && text.trim()) send({ cmd: "send", conversation: state.front, text });
    $("text").value = "";
  });
  $("file").addEventListener("change", () => {
    const f = $("file").files[0];
    if (f) offer(f);
    $("file").value = "";
  });
  const main = $("main");
  main.addEventListener("dragover", (e) => { e.preventDefault(); main.classList.add("dropping"); });
  main.addEventListener("dragleave", () => main.classList.remove("dropping"));
  main.addEventListener("drop", (e) => {
    e.preventDefault();
    main.classList.remove("dropping");
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) offer(f);
  });
  $("notify").addEventListener("click", async () => {
    if (!("Notification" in window)) { notice("This browser has no notifications."); return; }
    const p = await Notification.requestPermission();
    notice(p === "granted" ? "Notifications on for conversations not in front." : "Notifications are " + p + ".");
  });
  // Alt+1…9 brings a conversation to the front, as in the terminal.
  document.addEventListener("keydown", (e) => {
    if (e.altKey && !e.ctrlKey && !e.metaKey && e.key >= "1" && e.key <= "9") {
      const item = state.items[Number(e.key) - 1];
      if (item) {
        e.preventDefault();
        send({ cmd: "switch", conversation: item.number });
      }
    }
  });
  connect();
})();
