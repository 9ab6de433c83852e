/*
 * Website chat widget of the clinic assistant: a launcher button and a chat panel
 * that talk to the Rasa server over its socketio channel (channels/socketio.py).
 *
 *   <script src="https://assistant.example/clinic-chat.js"></script>
 *   <script>
 *     ClinicChat.init({ serverUrl: "https://assistant.example" });
 *   </script>
 *
 * or, without the second script: <script src=".../clinic-chat.js"
 * data-server-url="https://assistant.example" data-clinic-name="..."
 * data-primary-color="#1d5c8c"></script>
 *
 * Greeting: the widget has none of its own. When the chat opens, the server starts
 * the conversation and the assistant introduces itself (what it is, not medical
 * advice, 911 in an emergency): that is the patient's one greeting.
 *
 * Safety: everything the patient or the assistant wrote is put on the page as text
 * (textContent, text nodes), never as HTML. Only http(s) addresses in the
 * assistant's text become links.
 *
 * Persistence: the session id and the transcript are kept together in localStorage
 * (one key per server), so a reload or another page of the site carries on the
 * same conversation. The id is the server's: it issues and signs one on the first
 * session_request, and takes back only an id it signed (a stored id it does not
 * take starts a new conversation, and the transcript shown is cleared). They are forgotten after `sessionMinutes` without a message
 * (Rasa starts a new session then too) or when the patient clicks "New chat".
 */
import { io } from "socket.io-client";

const DEFAULTS = {
  serverUrl: "",
  socketPath: "/socket.io",
  clinicName: "Valliant Life Medical",
  launcherLabel: "Chat with us",
  colors: { primary: "#1d5c8c", onPrimary: "#ffffff" },
  // Matches session_expiration_time in domain.yml.
  sessionMinutes: 60,
};
const MAX_MESSAGE_LENGTH = 10000;
const MAX_STORED_ENTRIES = 200;
const ANSWER_TIMEOUT_MS = 60000;
const LINK = /\bhttps?:\/\/[^\s<>"']+/gi;

const STYLE = `
:host { all: initial; }
* { box-sizing: border-box; }
.cc { --cc-primary: #1d5c8c; --cc-on-primary: #fff;
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1b1b1b; }
.cc-sr { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
button { font: inherit; cursor: pointer; }
button:focus-visible, input:focus-visible, a:focus-visible {
  outline: 3px solid #f2a900; outline-offset: 2px; }
.cc-launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
  padding: 12px 20px; border: 0; border-radius: 24px; background: var(--cc-primary);
  color: var(--cc-on-primary); box-shadow: 0 2px 8px rgba(0,0,0,.3); }
.cc-panel { position: fixed; right: 20px; bottom: 80px; z-index: 2147483001;
  width: 370px; height: min(560px, calc(100vh - 100px)); display: flex;
  flex-direction: column; background: #fff; border-radius: 12px;
  box-shadow: 0 4px 24px rgba(0,0,0,.3); overflow: hidden; }
.cc-panel[hidden] { display: none; }
.cc-header { display: flex; align-items: center; gap: 8px; padding: 10px 12px;
  background: var(--cc-primary); color: var(--cc-on-primary); }
.cc-header h2 { flex: 1; margin: 0; font-size: 16px; }
.cc-header button { border: 1px solid currentColor; border-radius: 6px;
  background: transparent; color: inherit; padding: 4px 8px; }
.cc-log { flex: 1; overflow-y: auto; padding: 12px; display: flex;
  flex-direction: column; gap: 8px; }
.cc-msg { max-width: 85%; padding: 8px 12px; border-radius: 12px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.cc-bot { align-self: flex-start; background: #eef1f4; }
.cc-user { align-self: flex-end; background: var(--cc-primary);
  color: var(--cc-on-primary); }
.cc-bot a { color: #0b4f80; }
.cc-choices { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
.cc-choices button { padding: 6px 10px; border: 1px solid var(--cc-primary);
  border-radius: 16px; background: #fff; color: var(--cc-primary); }
.cc-choices button:disabled { opacity: .55; cursor: default; }
.cc-typing, .cc-status { margin: 0; padding: 0 12px 6px; font-size: 13px;
  color: #555; }
.cc-typing[hidden], .cc-status:empty { display: none; }
.cc-form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #ddd; }
.cc-form input { flex: 1; min-width: 0; padding: 8px 10px; font: inherit;
  font-size: 16px; /* no zoom on focus in iOS Safari */
  border: 1px solid #888; border-radius: 8px; }
.cc-form button { padding: 8px 14px; border: 0; border-radius: 8px;
  background: var(--cc-primary); color: var(--cc-on-primary); }
@media (max-width: 480px) {
  .cc-panel { right: 0; bottom: 0; width: 100%; height: 100%; border-radius: 0; }
}
`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An <a> for an http(s) address, or null for anything else. */
function safeLink(address) {
  let url;
  try {
    url = new URL(address);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  const link = element("a", "", address);
  link.href = url.href;
  link.target = "_blank";
  link.rel = "noopener noreferrer nofollow";
  return link;
}

/** Appends `text` as text nodes, with http(s) addresses as links. */
function appendWithLinks(parent, text) {
  let done = 0;
  for (const match of text.matchAll(LINK)) {
    const address = match[0].replace(/[.,;:!?)\]]+$/, "");
    const link = safeLink(address);
    if (!link) continue;
    parent.append(document.createTextNode(text.slice(done, match.index)), link);
    done = match.index + address.length;
  }
  parent.append(document.createTextNode(text.slice(done)));
}

function validColor(value) {
  return typeof value === "string" && CSS.supports("color", value);
}

/** Session id and transcript in localStorage, dropped after `minutes` idle. */
class Transcript {
  constructor(key, minutes) {
    this.key = key;
    this.maxAgeMs = minutes * 60 * 1000;
    this.sessionId = null;
    this.entries = [];
    this.open = false;
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(key) || "null");
    } catch {
      saved = null;
    }
    if (saved && Date.now() - Number(saved.updatedAt) < this.maxAgeMs) {
      this.sessionId = typeof saved.sessionId === "string" ? saved.sessionId : null;
      this.entries = Array.isArray(saved.entries) ? saved.entries : [];
      this.open = saved.open === true;
    }
  }

  save() {
    this.entries = this.entries.slice(-MAX_STORED_ENTRIES);
    const { sessionId, entries, open } = this;
    try {
      localStorage.setItem(
        this.key,
        JSON.stringify({ sessionId, entries, open, updatedAt: Date.now() }),
      );
    } catch {
      // Storage full or blocked: the conversation still works, without reloads.
    }
  }

  clear() {
    this.sessionId = null;
    this.entries = [];
    try {
      localStorage.removeItem(this.key);
    } catch {
      // Nothing stored.
    }
  }
}

class ClinicChatWidget {
  constructor(options) {
    this.config = {
      ...DEFAULTS,
      ...options,
      colors: { ...DEFAULTS.colors, ...(options.colors || {}) },
    };
    this.config.serverUrl = String(this.config.serverUrl || "").replace(/\/+$/, "");
    if (!this.config.serverUrl) throw new Error("ClinicChat: serverUrl is required");
    this.transcript = new Transcript(
      `clinic-chat:${this.config.serverUrl}`,
      Number(this.config.sessionMinutes) || DEFAULTS.sessionMinutes,
    );
    this.socket = null;
    this.confirmed = false;
    this.queue = [];
    this.answerTimer = null;
    this.render();
    if (this.transcript.open) this.open(false);
  }

  render() {
    const { clinicName, launcherLabel, colors } = this.config;
    this.host = element("div");
    this.host.id = "clinic-chat-widget";
    const root = this.host.attachShadow({ mode: "open" });
    const style = element("style", "", STYLE);
    const box = element("div", "cc");
    if (validColor(colors.primary)) {
      box.style.setProperty("--cc-primary", colors.primary);
    }
    if (validColor(colors.onPrimary)) {
      box.style.setProperty("--cc-on-primary", colors.onPrimary);
    }

    this.launcher = element("button", "cc-launcher", launcherLabel);
    this.launcher.type = "button";
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.setAttribute("aria-controls", "cc-panel");
    this.launcher.addEventListener("click", () =>
      this.panel.hidden ? this.open(true) : this.close(),
    );

    this.panel = element("section", "cc-panel");
    this.panel.id = "cc-panel";
    this.panel.hidden = true;
    this.panel.setAttribute("role", "dialog");
    this.panel.setAttribute("aria-labelledby", "cc-title");
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.panel.hidden) {
        event.preventDefault();
        this.close();
      }
    });

    const header = element("div", "cc-header");
    const title = element("h2", "", clinicName);
    title.id = "cc-title";
    const restart = element("button", "", "New chat");
    restart.type = "button";
    restart.addEventListener("click", () => this.restart());
    const closer = element("button", "", "\u00d7");
    closer.type = "button";
    closer.setAttribute("aria-label", "Close chat");
    closer.addEventListener("click", () => this.close());
    header.append(title, restart, closer);

    this.log = element("div", "cc-log");
    this.log.setAttribute("role", "log");
    this.log.setAttribute("aria-live", "polite");
    this.log.setAttribute("aria-label", `Conversation with ${clinicName}`);
    this.renderEntries();

    this.typing = element("p", "cc-typing", "The assistant is typing\u2026");
    this.typing.hidden = true;
    this.status = element("p", "cc-status");
    this.status.setAttribute("role", "status");

    const form = element("form", "cc-form");
    const label = element("label", "cc-sr", "Your message");
    label.htmlFor = "cc-input";
    this.input = element("input");
    this.input.id = "cc-input";
    this.input.type = "text";
    this.input.autocomplete = "off";
    this.input.maxLength = MAX_MESSAGE_LENGTH;
    this.input.placeholder = "Type your message";
    const sendButton = element("button", "", "Send");
    sendButton.type = "submit";
    form.append(label, this.input, sendButton);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.input.value.trim();
      if (!text) return;
      this.input.value = "";
      this.send(text, text);
    });

    this.panel.append(header, this.log, this.typing, this.status, form);
    box.append(this.launcher, this.panel);
    root.append(style, box);
    document.body.append(this.host);
  }

  /** Every stored entry; only the latest choices stay active. */
  renderEntries() {
    this.log.replaceChildren();
    const lastUser = this.transcript.entries.map((e) => e.who).lastIndexOf("user");
    this.transcript.entries.forEach((entry, index) => {
      this.log.append(this.bubble(entry, index > lastUser));
    });
  }

  bubble(entry, choicesActive = false) {
    const bot = entry.who === "bot";
    const node = element("div", `cc-msg ${bot ? "cc-bot" : "cc-user"}`);
    node.append(element("span", "cc-sr", bot ? "Assistant: " : "You: "));
    const text = String(entry.text || "");
    if (bot) appendWithLinks(node, text);
    else node.append(document.createTextNode(text));
    const choices = Array.isArray(entry.buttons) ? entry.buttons : [];
    if (choices.length) {
      const group = element("div", "cc-choices");
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", "Choices");
      for (const choice of choices) {
        const button = element("button", "", String(choice.title));
        button.type = "button";
        button.disabled = !choicesActive;
        button.addEventListener("click", () => {
          this.send(String(choice.payload), String(choice.title));
          this.input.focus();
        });
        group.append(button);
      }
      node.append(group);
    }
    return node;
  }

  add(entry, choicesActive) {
    this.transcript.entries.push(entry);
    this.transcript.save();
    this.log.append(this.bubble(entry, choicesActive));
    this.log.scrollTop = this.log.scrollHeight;
  }

  open(focus) {
    this.panel.hidden = false;
    this.launcher.setAttribute("aria-expanded", "true");
    this.transcript.open = true;
    this.transcript.save();
    this.log.scrollTop = this.log.scrollHeight;
    this.connect();
    if (focus) this.input.focus();
  }

  close() {
    this.panel.hidden = true;
    this.launcher.setAttribute("aria-expanded", "false");
    this.transcript.open = false;
    this.transcript.save();
    this.launcher.focus();
  }

  connect() {
    if (this.socket) return;
    const socket = io(this.config.serverUrl, { path: this.config.socketPath });
    this.socket = socket;
    socket.on("connect", () => {
      this.setStatus("");
      this.confirmed = false;
      socket.emit("session_request", { session_id: this.transcript.sessionId });
    });
    socket.on("session_confirm", (sessionId) => {
      if (typeof sessionId !== "string") return;
      if (this.transcript.sessionId && sessionId !== this.transcript.sessionId) {
        // The server did not take the stored id: a new conversation.
        this.transcript.entries = [];
        this.renderEntries();
      }
      this.transcript.sessionId = sessionId;
      this.transcript.save();
      this.confirmed = true;
      for (const message of this.queue.splice(0)) this.emit(message);
    });
    socket.on("bot_uttered", (message) => this.receive(message));
    socket.on("message_error", (problem) => {
      this.stopWaiting();
      const reason = problem && typeof problem.error === "string" ? problem.error : "";
      this.setStatus(`Your message was not sent. ${reason}`.trim());
    });
    socket.on("connect_error", () => {
      this.setStatus("Cannot reach the assistant. Trying again\u2026");
    });
    socket.on("disconnect", () => {
      this.confirmed = false;
    });
  }

  /** Shows `shown` as the patient's message and sends `message` to the assistant. */
  send(message, shown) {
    this.add({ who: "user", text: shown });
    for (const button of this.log.querySelectorAll(".cc-choices button")) {
      button.disabled = true;
    }
    this.setStatus("");
    this.typing.hidden = false;
    clearTimeout(this.answerTimer);
    this.answerTimer = setTimeout(() => {
      this.stopWaiting();
      this.setStatus("No answer from the assistant yet. Please try again.");
    }, ANSWER_TIMEOUT_MS);
    if (this.confirmed) this.emit(message);
    else this.queue.push(message);
  }

  emit(message) {
    this.socket.emit("user_uttered", {
      message,
      session_id: this.transcript.sessionId,
    });
  }

  /** A bot_uttered event: {text}, with quick_replies or buttons when offered. */
  receive(message) {
    // Until the session is confirmed, answers belong to a conversation left behind
    // (a late reply after "New chat").
    if (!this.confirmed || !message || typeof message !== "object") return;
    const text = typeof message.text === "string" ? message.text : "";
    const offered = message.quick_replies || message.buttons || [];
    const buttons = (Array.isArray(offered) ? offered : [])
      .filter((b) => b && typeof b.payload === "string" && b.title !== undefined)
      .map((b) => ({ title: String(b.title), payload: b.payload }));
    if (!text && !buttons.length) return;
    this.stopWaiting();
    this.add({ who: "bot", text, buttons }, true);
  }

  stopWaiting() {
    this.typing.hidden = true;
    clearTimeout(this.answerTimer);
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  /** Forgets this conversation (here and its id) and asks for a new session. */
  restart() {
    this.stopWaiting();
    this.transcript.clear();
    this.transcript.open = !this.panel.hidden;
    this.renderEntries();
    this.confirmed = false;
    if (this.socket && this.socket.connected) {
      this.socket.emit("session_request", { session_id: null });
    }
    this.input.focus();
  }
}

let instance = null;

function init(options) {
  if (instance) return instance;
  if (!document.body) {
    document.addEventListener("DOMContentLoaded", () => init(options), { once: true });
    return null;
  }
  instance = new ClinicChatWidget(options || {});
  return instance;
}

window.ClinicChat = { init };

const script = document.currentScript;
if (script && script.dataset.serverUrl) {
  const data = script.dataset;
  init({
    serverUrl: data.serverUrl,
    ...(data.clinicName && { clinicName: data.clinicName }),
    colors: { primary: data.primaryColor, onPrimary: data.onPrimaryColor },
  });
}
