// The chat page of `internvl serve` (README.md, "The chat page"). Plain JavaScript, no build step:
// it talks to this server's /info, /v1/models and /v1/chat/completions (streamed). Model output is
// only ever placed in the page as text nodes (see renderMarkdown): never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  info: null, // GET /info: limits, whether a key is needed, the thinking prompt
  model: null, // the id from /v1/models
  key: sessionStorage.getItem("internvl-api-key") || "", // this tab only
  messages: [], // the conversation as sent to the server (thinking sections dropped)
  attachments: [], // {kind: "image" | "video", url: data URL, name}
  controller: null, // AbortController of the answer being streamed
};

// -- server facts and the API key -------------------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    // not JSON: fall through
  }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

async function connect() {
  try {
    const response = await fetch("/info");
    if (!response.ok) throw new Error(await errorMessage(response));
    state.info = await response.json();
  } catch (error) {
    $("facts").textContent = "cannot reach the server: " + error.message;
    return;
  }
  const limits = state.info.limits;
  $("max-tokens").max = limits.max_tokens;
  $("max-tiles").max = limits.max_tiles;
  if (state.info.api_key_required && !state.key) {
    askForKey("");
    return;
  }
  await loadModel();
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (response.status === 401) {
    askForKey(await errorMessage(response));
    return;
  }
  if (!response.ok) {
    $("facts").textContent = await errorMessage(response);
    return;
  }
  state.model = (await response.json()).data[0].id;
  const l = state.info.limits;
  $("facts").textContent =
    `${state.model} · up to ${l.max_images} images or videos · ${l.max_image_pixels.toLocaleString("en")} ` +
    `pixels per image · ${l.max_tiles} tiles · ${l.max_tokens} tokens · ` +
    `${Math.round(l.max_request_bytes / 2 ** 20)} MiB per request`;
}

function askForKey(problem) {
  $("key-error").textContent = problem;
  $("key").value = "";
  if (!$("key-dialog").open) $("key-dialog").showModal();
  $("key").focus();
}

$("key-form").addEventListener("submit", () => {
  state.key = $("key").value.trim();
  sessionStorage.setItem("internvl-api-key", state.key);
  loadModel();
});

// -- attachments --------------------------------------------------------------------------------------

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attach(files) {
  for (const file of files) {
    const kind = file.type.startsWith("video/") ? "video" : file.type.startsWith("image/") ? "image" : null;
    if (kind === null) {
      showError(`${file.name}: not an image or a video`);
      continue;
    }
    state.attachments.push({ kind, url: await readAsDataURL(file), name: file.name });
  }
  drawAttachments();
}

function mediaElement(item) {
  const element = document.createElement(item.kind === "video" ? "video" : "img");
  element.src = item.url;
  element.className = "thumb";
  if (item.kind === "video") element.muted = true;
  else element.alt = item.name;
  element.title = item.name;
  return element;
}

function drawAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attachments.forEach((item, index) => {
    const holder = document.createElement("span");
    holder.className = "pending";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "remove " + item.name;
    remove.addEventListener("click", () => {
      state.attachments.splice(index, 1);
      drawAttachments();
    });
    holder.append(mediaElement(item), remove);
    box.append(holder);
  });
}

$("files").addEventListener("change", async (event) => {
  await attach([...event.target.files]);
  event.target.value = "";
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  attach([...event.dataTransfer.files]);
});
$("prompt").addEventListener("paste", (event) => {
  const files = [...event.clipboardData.files];
  if (files.length) {
    event.preventDefault();
    attach(files);
  }
});

// -- rendering: markdown as DOM nodes, never as HTML -------------------------------------------------

const INLINE = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\n]+\*)/;

function renderInline(parent, text) {
  for (const piece of text.split(INLINE)) {
    if (!piece) continue;
    let node;
    if (piece.length > 2 && piece.startsWith("`") && piece.endsWith("`")) {
      node = document.createElement("code");
      node.textContent = piece.slice(1, -1);
    } else if (piece.length > 4 && piece.startsWith("**") && piece.endsWith("**")) {
      node = document.createElement("strong");
      node.textContent = piece.slice(2, -2);
    } else if (piece.length > 2 && piece.startsWith("*") && piece.endsWith("*")) {
      node = document.createElement("em");
      node.textContent = piece.slice(1, -1);
    } else {
      node = document.createTextNode(piece);
    }
    parent.append(node);
  }
}

// Paragraphs, headings, lists and fenced code; everything else stays plain text.
function renderMarkdown(parent, text) {
  const lines = text.split("\n");
  let list = null;
  let paragraph = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      const pre = document.createElement("pre");
      const element = document.createElement("code");
      element.textContent = code.join("\n");
      pre.append(element);
      parent.append(pre);
      list = paragraph = null;
      continue;
    }
    const heading = /^(#{1,3}) (.*)$/.exec(line);
    const item = /^\s*(?:[-*]|\d+\.) (.*)$/.exec(line);
    if (heading) {
      const element = document.createElement("h" + (heading[1].length + 2));
      renderInline(element, heading[2]);
      parent.append(element);
      list = paragraph = null;
    } else if (item) {
      if (list === null) {
        list = document.createElement(/^\s*\d/.test(line) ? "ol" : "ul");
        parent.append(list);
      }
      const element = document.createElement("li");
      renderInline(element, item[1]);
      list.append(element);
      paragraph = null;
    } else if (!line.trim()) {
      list = paragraph = null;
    } else {
      if (paragraph === null) {
        paragraph = document.createElement("p");
        parent.append(paragraph);
        list = null;
      } else {
        paragraph.append(document.createElement("br"));
      }
      renderInline(paragraph, line);
    }
  }
}

// Splits "<think>…</think>answer" (the InternVL3.5 thinking mode) into its two parts.
function splitThinking(text) {
  const start = text.indexOf("<think>");
  if (start === -1 || text.slice(0, start).trim()) return { thinking: null, answer: text, done: true };
  const end = text.indexOf("</think>", start);
  if (end === -1) return { thinking: text.slice(start + 7), answer: "", done: false };
  return { thinking: text.slice(start + 7, end), answer: text.slice(end + 8), done: true };
}

function renderAnswer(body, text) {
  body.replaceChildren();
  const parts = splitThinking(text);
  if (parts.thinking !== null) {
    const details = document.createElement("details");
    details.className = "thinking";
    const summary = document.createElement("summary");
    summary.textContent = parts.done ? "Thinking" : "Thinking…";
    details.append(summary);
    renderMarkdown(details, parts.thinking.trim());
    body.append(details);
  }
  renderMarkdown(body, parts.answer.trim());
}

function addBubble(role) {
  const bubble = document.createElement("article");
  bubble.className = "message " + role;
  const body = document.createElement("div");
  body.className = "body";
  bubble.append(body);
  $("log").append(bubble);
  return body;
}

function showError(message) {
  const body = addBubble("error");
  body.textContent = message;
  scrollDown();
}

function scrollDown() {
  $("log").lastElementChild?.scrollIntoView({ block: "end" });
}

// -- asking -----------------------------------------------------------------------------------------

function numberSetting(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

function requestBody() {
  const system = [];
  const own = $("system").value.trim();
  if ($("thinking").checked) system.push(state.info.thinking_system_prompt);
  if (own) system.push(own);
  const messages = system.length ? [{ role: "system", content: system.join("\n\n") }] : [];
  return {
    model: state.model,
    messages: messages.concat(state.messages),
    stream: true,
    max_tokens: numberSetting("max-tokens"),
    temperature: numberSetting("temperature"),
    top_p: numberSetting("top-p"),
    max_tiles: numberSetting("max-tiles"),
  };
}

function userContent(text, attachments) {
  if (!attachments.length) return text;
  const parts = attachments.map((item) =>
    item.kind === "video"
      ? { type: "video_url", video_url: { url: item.url } }
      : { type: "image_url", image_url: { url: item.url } },
  );
  if (text) parts.push({ type: "text", text });
  return parts;
}

// Reads server-sent events from a fetch response; calls onData with each parsed `data:` object.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

async function send() {
  const text = $("prompt").value.trim();
  if (state.controller || (!text && !state.attachments.length)) return;
  if (!state.model) {
    showError("not connected to a model yet");
    return;
  }
  const attachments = state.attachments;
  const userBody = addBubble("user");
  attachments.forEach((item) => userBody.append(mediaElement(item)));
  const words = document.createElement("p");
  words.textContent = text;
  userBody.append(words);
  state.messages.push({ role: "user", content: userContent(text, attachments) });
  state.attachments = [];
  drawAttachments();
  $("prompt").value = "";

  const answerBody = addBubble("assistant");
  answerBody.dataset.chunks = "0";
  answerBody.parentElement.classList.add("streaming");
  let answer = "";
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  let failure = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) {
      failure = await errorMessage(response);
    } else {
      await readEvents(response, (data) => {
        if (data.error) {
          failure = data.error.message;
          return;
        }
        const delta = data.choices?.[0]?.delta?.content;
        if (delta) {
          answer += delta;
          answerBody.dataset.chunks = String(Number(answerBody.dataset.chunks) + 1);
          renderAnswer(answerBody, answer);
          scrollDown();
        }
      });
    }
  } catch (error) {
    if (error.name === "AbortError") {
      answerBody.parentElement.classList.add("stopped");
    } else {
      failure = "the request failed: " + error.message;
    }
  } finally {
    state.controller = null;
    answerBody.parentElement.classList.remove("streaming");
    setBusy(false);
  }
  if (failure !== null && !answer) {
    // The server refused the question: it leaves the conversation, and its words and attachments go back
    // to the box (unless new ones were put there meanwhile).
    answerBody.parentElement.remove();
    userBody.parentElement.classList.add("refused");
    state.messages.pop();
    if (!$("prompt").value) $("prompt").value = text;
    if (!state.attachments.length) {
      state.attachments = attachments;
      drawAttachments();
    }
    showError(failure);
    return;
  }
  if (failure !== null) showError(failure);
  state.messages.push({ role: "assistant", content: splitThinking(answer).answer.trim() });
  $("prompt").focus();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => state.controller?.abort());
$("new-chat").addEventListener("click", () => {
  state.controller?.abort();
  state.messages = [];
  state.attachments = [];
  drawAttachments();
  $("log").replaceChildren();
  $("prompt").focus();
});
$("toggle-settings").addEventListener("click", () => {
  const panel = $("settings");
  panel.hidden = !panel.hidden;
  $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
});

connect();
