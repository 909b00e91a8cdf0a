// app.js: the team board's browser client. Plain JS, no build step: fetch() for the REST API,
// one EventSource per open room for live posts, reactions and presence.
"use strict";

const EMOJIS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const $ = (id) => document.getElementById(id);
const state = { me: null, room: null, es: null, posts: new Map(), online: new Map(), roomsCursor: null, postsCursor: null };

function showError(msg) { $("error").textContent = msg || ""; }

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    // 422: { error: "validation failed", fields: { name: "is required", ... } }
    const fields = data && data.fields ? Object.entries(data.fields).map(([k, v]) => k + ": " + v).join("; ") : "";
    throw new Error(fields || (data && data.error) || res.status + " " + res.statusText);
  }
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

// ---------------------------------------------------------------- who am I

async function refreshMe() {
  try { state.me = (await api("GET", "/api/me")).name; } catch (e) { state.me = null; }
  $("login-form").hidden = !!state.me;
  $("me").hidden = $("logout").hidden = !state.me;
  $("me").textContent = state.me ? "signed in as " + state.me : "";
  $("room-form").hidden = $("post-form").hidden = !state.me;
}

// signup and login both answer with the session cookie (what EventSource sends) and a token
async function signIn(path) {
  try {
    await api("POST", path, { name: $("login-name").value.trim(), password: $("login-password").value });
    $("login-password").value = "";
    showError("");
    await refreshMe();
    if (state.room) openRoom(state.room.id);   // reconnect the stream as this user
  } catch (e) { showError(e.message); }
}

$("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn("/api/login"); });
$("signup-button").addEventListener("click", () => {
  if ($("login-form").reportValidity()) signIn("/api/signup");
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/api/logout");
  await refreshMe();
  closeStream();
  $("status").textContent = "log in to follow the room live";
});

// ---------------------------------------------------------------- rooms

async function loadRooms(more) {
  const q = more && state.roomsCursor ? "&cursor=" + state.roomsCursor : "";
  const page = await api("GET", "/api/rooms?limit=50" + q);
  if (!more) $("rooms").textContent = "";
  for (const r of page.items) {
    const a = el("a", { href: "#room=" + r.id, "data-room": r.id }, r.title);
    $("rooms").append(el("li", {}, a));
  }
  state.roomsCursor = page.next_cursor;
  $("more-rooms").hidden = !page.next_cursor;
  markCurrentRoom();
}

function markCurrentRoom() {
  for (const a of document.querySelectorAll("#rooms a")) {
    a.classList.toggle("current", state.room && a.dataset.room === String(state.room.id));
  }
}

$("more-rooms").addEventListener("click", () => loadRooms(true));

$("room-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await api("POST", "/api/rooms", { title: $("room-title").value });
    $("room-title").value = "";
    showError("");
    await loadRooms();
    location.hash = "room=" + r.id;
  } catch (e) { showError(e.message); }
});

// ---------------------------------------------------------------- posts

function renderReactions(post) {
  const box = el("div", { class: "reactions" });
  const mine = new Set(post.mine || []);
  for (const emoji of EMOJIS) {
    const n = (post.reactions || {})[emoji] || 0;
    const b = el("button", { type: "button", title: "react with " + emoji, "data-emoji": emoji }, emoji + (n ? " " + n : ""));
    if (mine.has(emoji)) b.classList.add("mine");
    b.addEventListener("click", () => toggleReaction(post, emoji));
    box.append(b);
  }
  return box;
}

function renderPost(post, fresh) {
  const meta = el("div", { class: "meta" }, post.author + " · " + new Date(post.created_at).toLocaleString() + (post.edited_at ? " · edited" : ""));
  const li = el("li", { id: "post-" + post.id, "data-post": post.id, class: fresh ? "fresh" : "" },
    meta, el("div", { class: "body" }, post.body), renderReactions(post));
  if (state.me && (post.author === state.me || (state.room && state.room.created_by === state.me))) {
    li.append(el("button", { type: "button", class: "delete", onclick: () => deletePost(post.id) }, "delete"));
  }
  return li;
}

function upsertPost(post, fresh, atTop) {
  const old = state.posts.get(post.id);
  if (old && old.mine && !post.mine) post.mine = old.mine;     // events carry no per-user fields
  state.posts.set(post.id, post);
  const li = renderPost(post, fresh);
  const cur = $("post-" + post.id);
  if (cur) cur.replaceWith(li);
  else if (atTop) $("posts").prepend(li);
  else $("posts").append(li);
}

async function loadPosts(more) {
  const q = more && state.postsCursor ? "&cursor=" + state.postsCursor : "";
  const page = await api("GET", "/api/rooms/" + state.room.id + "/posts?limit=20" + q);
  for (const p of page.items) upsertPost(p, false, false);
  state.postsCursor = page.next_cursor;
  $("older").hidden = !page.next_cursor;
}

$("older").addEventListener("click", () => loadPosts(true));

$("post-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const p = await api("POST", "/api/rooms/" + state.room.id + "/posts", { body: $("post-body").value });
    $("post-body").value = "";
    showError("");
    upsertPost(p, true, true);      // the post.created event for it is then a no-op
  } catch (e) { showError(e.message); }
});

async function toggleReaction(post, emoji) {
  if (!state.me) return showError("log in to react");
  const mine = new Set(post.mine || []);
  try {
    if (mine.has(emoji)) {
      await api("DELETE", "/api/posts/" + post.id + "/reactions/" + encodeURIComponent(emoji));
      mine.delete(emoji);
    } else {
      await api("POST", "/api/posts/" + post.id + "/reactions", { emoji });
      mine.add(emoji);
    }
    post.mine = [...mine];
    showError("");
  } catch (e) { showError(e.message); }
}

async function deletePost(id) {
  try { await api("DELETE", "/api/posts/" + id); } catch (e) { showError(e.message); }
}

// ---------------------------------------------------------------- live events

function logEvent(text) {
  const li = el("li", {}, new Date().toLocaleTimeString() + " " + text);
  $("events").prepend(li);
  while ($("events").children.length > 50) $("events").lastChild.remove();
}

function renderOnline() {
  const names = [...state.online.keys()].sort();
  $("online").textContent = names.length ? "online: " + names.join(", ") : "";
}

function closeStream() {
  if (state.es) state.es.close();
  state.es = null;
}

function openStream(roomId) {
  closeStream();
  state.online.clear();
  renderOnline();
  if (!state.me) { $("status").textContent = "log in to follow the room live"; return; }
  const es = new EventSource("/api/rooms/" + roomId + "/events", { withCredentials: true });
  state.es = es;
  es.onopen = () => { $("status").textContent = "live"; $("status").dataset.live = "1"; };
  es.onerror = () => {
    $("status").textContent = "reconnecting…";
    delete $("status").dataset.live;
    if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (state.es === es) openStream(roomId); }, 5000 + Math.random() * 5000);
  };
  const on = (type, fn) => es.addEventListener(type, (e) => fn(JSON.parse(e.data)));
  on("post.created", (p) => { upsertPost(p, true, true); logEvent(p.author + " posted"); });
  on("post.updated", (p) => { upsertPost(p, true, false); logEvent(p.author + " edited a post"); });
  on("post.deleted", (d) => { state.posts.delete(d.id); const li = $("post-" + d.id); if (li) li.remove(); logEvent(d.by + " deleted a post"); });
  on("reaction", (r) => {
    const p = state.posts.get(r.post_id);
    if (p) {
      p.reactions = r.reactions;
      if (r.user === state.me) {
        const mine = new Set(p.mine || []);
        if (r.action === "added") mine.add(r.emoji); else mine.delete(r.emoji);
        p.mine = [...mine];
      }
      upsertPost(p, false, false);
    }
    logEvent(r.user + " " + (r.action === "added" ? "reacted " : "took back ") + r.emoji);
  });
  on("presence.join", (u) => { state.online.set(u.user, (state.online.get(u.user) || 0) + 1); renderOnline(); logEvent(u.user + " joined"); });
  on("presence.leave", (u) => {
    const n = (state.online.get(u.user) || 1) - 1;
    if (n > 0) state.online.set(u.user, n); else state.online.delete(u.user);
    renderOnline();
    logEvent(u.user + " left");
  });
  on("room.updated", (r) => { state.room = r; $("room-title-h").textContent = r.title; $("room-desc").textContent = r.description; loadRooms(); });
  on("room.deleted", () => { closeStream(); $("status").textContent = "this room was deleted"; loadRooms(); });
  // Events were lost while we were away (history is bounded): fetch the room again.
  es.addEventListener("sluice-gap", () => openRoom(roomId));
}

async function openRoom(id) {
  try {
    const room = await api("GET", "/api/rooms/" + id);
    state.room = room;
    state.posts.clear();
    state.postsCursor = null;
    $("posts").textContent = "";
    $("events").textContent = "";
    $("room").hidden = false;
    $("room-title-h").textContent = room.title;
    $("room-desc").textContent = room.description;
    markCurrentRoom();
    openStream(id);          // subscribe first, then load: nothing falls between the two
    await loadPosts(false);
    showError("");
  } catch (e) { showError(e.message); }
}

function route() {
  const m = /room=(\d+)/.exec(location.hash);
  if (m) openRoom(Number(m[1]));
}

window.addEventListener("hashchange", route);

(async function main() {
  await refreshMe();
  try { await loadRooms(false); } catch (e) { showError(e.message); }
  route();
})();
