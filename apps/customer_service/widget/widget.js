/* Verticore support chat widget: no dependencies, talks only to the server that served it.
   Customer, bot and agent text is always inserted with textContent (never as HTML). */
(function () {
  "use strict";
  var POLL_MS = 2000;
  var $ = function (id) { return document.getElementById(id); };
  var log = $("vc-log"), form = $("vc-form"), input = $("vc-input"), send = $("vc-send");
  var banner = $("vc-banner"), errorBox = $("vc-error");

  function readKey() {
    var hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    var query = new URLSearchParams(location.search);
    var script = document.currentScript;
    return hash.get("key") || query.get("key") || (script && script.dataset.key) ||
      document.documentElement.dataset.key || "";
  }
  var KEY = readKey();
  var API = location.pathname.replace(/\/widget(\.html)?\/?$/, "");
  var STORE_KEY = "vc-session:" + API;
  var sessionId = null, shown = {}, status = "bot", busy = false, pollTimer = null;

  function remember(id) {
    sessionId = id;
    try { id ? sessionStorage.setItem(STORE_KEY, id) : sessionStorage.removeItem(STORE_KEY); } catch (e) { /* sandboxed */ }
  }
  try { sessionId = sessionStorage.getItem(STORE_KEY); } catch (e) { sessionId = null; }

  function showError(text) {
    errorBox.textContent = text || "";
    errorBox.hidden = !text;
  }

  function api(method, path, body) {
    var opts = { method: method, headers: { "Authorization": "Bearer " + KEY } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(API + path, opts).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (!resp.ok) {
          var err = new Error(typeof data.detail === "string" ? data.detail : "HTTP " + resp.status);
          err.status = resp.status;
          err.retryAfter = resp.headers.get("Retry-After");
          throw err;
        }
        return data;
      });
    });
  }

  function explain(err) {
    if (err.status === 401 || err.status === 403) return "This chat is not available right now (the chat key was refused).";
    if (err.status === 429) return "Too many messages at once; please wait " + (err.retryAfter || "a few") + " s and try again.";
    if (err.status === 503) return "We're very busy; please try again in a moment.";
    if (!err.status) return "Connection problem; please check your network and try again.";
    return "Something went wrong: " + err.message;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function rateButtons(messageId) {
    var box = el("div", "vc-rate", "Helpful? ");
    [["up", "Yes", "This answer helped"], ["down", "No", "This answer did not help"]].forEach(function (r) {
      var b = el("button", "vc-rate-" + r[0], r[1]);
      b.type = "button";
      b.title = r[2];
      b.setAttribute("aria-label", r[2]);
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", function () {
        api("POST", "/sessions/" + encodeURIComponent(sessionId) + "/feedback", { message_id: messageId, rating: r[0] })
          .then(function () {
            Array.prototype.forEach.call(box.querySelectorAll("button"), function (x) { x.setAttribute("aria-pressed", "false"); });
            b.setAttribute("aria-pressed", "true");
          })
          .catch(function (err) { showError(explain(err)); });
      });
      box.appendChild(b);
    });
    return box;
  }

  function renderMessage(m) {
    var cls = m.role === "customer" ? "vc-customer" : m.role === "agent" ? "vc-agent-msg" : "vc-bot";
    var node = el("div", "vc-msg " + cls);
    node.dataset.id = m.id;
    node.dataset.role = m.role;
    if (m.role === "agent") node.appendChild(el("div", "vc-who", (m.agent || "Agent") + " (support team)"));
    if (m.role === "bot") node.appendChild(el("div", "vc-who", "Assistant"));
    node.appendChild(el("div", "vc-text", m.text));
    if (m.role === "bot" && m.citations && m.citations.length) {
      var list = el("ul", "vc-cites");
      m.citations.forEach(function (c) {
        var li = el("li", "vc-cite");
        li.appendChild(el("span", "vc-cite-n", "[" + c.n + "] "));
        li.appendChild(el("span", "vc-cite-title", c.title || c.source));
        if (c.source) li.appendChild(el("span", "vc-cite-src", " \u2014 " + c.source));
        if (c.snippet) li.appendChild(el("span", "vc-cite-snippet", c.snippet));
        list.appendChild(li);
      });
      node.appendChild(list);
    }
    if (m.role === "bot" && m.message_id && m.status === "answered") node.appendChild(rateButtons(m.message_id));
    log.appendChild(node);
  }

  function setStatus(s, agentName) {
    status = s;
    banner.classList.remove("vc-agent");
    if (s === "waiting_for_agent") {
      banner.textContent = "Connecting you to an agent\u2026 You can keep this window open; their reply appears here.";
      banner.hidden = false;
    } else if (s === "with_agent") {
      banner.textContent = "You're chatting with " + (agentName || "our support team") + ".";
      banner.classList.add("vc-agent");
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    schedulePoll();
  }

  function clearPending() {
    Array.prototype.forEach.call(log.querySelectorAll(".vc-pending, .vc-typing"), function (n) { n.remove(); });
  }

  function applyTranscript(data) {
    var lastAgent = null;
    clearPending();
    (data.messages || []).forEach(function (m) {
      if (m.role === "agent") lastAgent = m.agent;
      if (!shown[m.id]) { shown[m.id] = true; renderMessage(m); }
    });
    setStatus(data.status, lastAgent);
    scrollDown();
  }

  function refresh() {
    if (!sessionId) return Promise.resolve();
    return api("GET", "/sessions/" + encodeURIComponent(sessionId)).then(function (data) {
      showError("");
      applyTranscript(data);
    }).catch(function (err) {
      if (err.status === 404) { remember(null); return; }  // the conversation is gone: start a new one
      showError(explain(err));
    });
  }

  function schedulePoll() {
    if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
    if (sessionId && (status === "waiting_for_agent" || status === "with_agent")) {
      pollTimer = setTimeout(function () {
        pollTimer = null;
        if (busy || document.hidden) { schedulePoll(); return; }
        refresh();
      }, POLL_MS);
    }
  }

  function ensureSession() {
    if (sessionId) return Promise.resolve(sessionId);
    return api("POST", "/sessions", {}).then(function (data) { remember(data.session_id); return data.session_id; });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text || busy) return;
    busy = true;
    send.disabled = true;
    showError("");
    var pending = el("div", "vc-msg vc-customer vc-pending", text);
    log.appendChild(pending);
    log.appendChild(el("div", "vc-typing", "Assistant is typing\u2026"));
    scrollDown();
    input.value = "";
    ensureSession()
      .then(function (sid) { return api("POST", "/sessions/" + encodeURIComponent(sid) + "/messages", { text: text }); })
      .then(refresh)
      .catch(function (err) {
        clearPending();
        input.value = text;  // nothing typed is lost
        showError(explain(err));
      })
      .then(function () { busy = false; send.disabled = false; input.focus(); });
  });

  if (!KEY) {
    showError("This chat needs a public chat key: open it as \u2026/widget#key=YOUR_PUBLIC_CHAT_KEY.");
    input.disabled = true;
    send.disabled = true;
    return;
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  refresh();
})();
