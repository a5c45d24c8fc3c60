// The lobby in a browser: one WebSocket to the lobby's WsGate on the page's own origin.
// Each command is one text message ("login ann", "join hall", "say hi"); every text
// message back is one line: "ok ..." / "error ..." answers, or chat from the room.
"use strict";

const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const socket = new WebSocket(scheme + location.host + "/ws");
const log = document.getElementById("log");
const status = document.getElementById("status");

function show(line) {
  const item = document.createElement("li");
  item.textContent = line; // text, never HTML: chat comes from other people
  item.className = line.startsWith("error") ? "error"
                 : line.startsWith("ok") ? "answer" : "chat";
  log.appendChild(item);
  log.scrollTop = log.scrollHeight;
}

function command(text) {
  if (socket.readyState === WebSocket.OPEN) {
    socket.send(text);
  } else {
    show("error not connected");
  }
}

function onSubmit(formId, inputId, verb, clear) {
  document.getElementById(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById(inputId);
    const value = input.value.trim();
    if (value) {
      command(verb + " " + value);
      if (clear) input.value = "";
    }
  });
}

socket.addEventListener("open", () => { status.textContent = "connected"; });
socket.addEventListener("message", (event) => { show(String(event.data)); });
socket.addEventListener("close", (event) => {
  status.textContent = "disconnected (" + event.code + ")";
});

onSubmit("login-form", "nick", "login", false);
onSubmit("join-form", "room", "join", false);
onSubmit("say-form", "text", "say", true);
