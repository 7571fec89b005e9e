// fer-bench serve: upload a photo or turn on the camera; boxes, labels and a bar per class.
// Photos go to POST /api/predict as multipart (field "image"); camera frames as raw JPEG bytes,
// at most one every FRAME_INTERVAL_MS and the next only after the last answer.
"use strict";

const FRAME_INTERVAL_MS = 200;   // at most 5 camera frames a second
const FRAME_MAX_WIDTH = 640;     // camera frames are sent at most this wide

const $ = (id) => document.getElementById(id);
const stage = $("stage"), photo = $("photo"), video = $("camera"), overlay = $("overlay");
const facesList = $("faces"), statusLine = $("status"), toggle = $("camera-toggle");
let limits = { max_upload: 10e6 };
let camera = null;          // { stream, running } while the camera is on
let photoUrl = null;

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Boxes are placed in percent of the image sent, so they follow the picture as it is scaled.
function drawFaces(answer) {
  overlay.replaceChildren();
  facesList.replaceChildren();
  const faces = answer.records.filter((r) => r.box !== null);
  faces.forEach((record, i) => {
    const [x, y, w, h] = record.box;
    const box = el("div", `face-box ${record.valence || ""}`);
    box.style.left = `${(100 * x) / answer.width}%`;
    box.style.top = `${(100 * y) / answer.height}%`;
    box.style.width = `${(100 * w) / answer.width}%`;
    box.style.height = `${(100 * h) / answer.height}%`;
    if (y < 0.06 * answer.height) box.classList.add("top");
    const p = record.probabilities[record.label];
    box.append(el("span", "tag", `${i + 1}: ${record.label} ${p.toFixed(2)}`));
    overlay.append(box);

    const item = el("li", "face");
    const title = el("div", "title", `${record.label} `);
    title.append(el("span", "valence", `(${record.valence})`));
    item.append(title);
    const bars = el("div", "bars");
    for (const [name, value] of Object.entries(record.probabilities)) {
      bars.append(el("span", "name", name));
      const bar = el("span", name === record.label ? "bar top" : "bar");
      const fill = el("span");
      fill.style.width = `${(100 * value).toFixed(1)}%`;
      bar.append(fill);
      bars.append(bar, el("span", "p", value.toFixed(2)));
    }
    item.append(bars);
    facesList.append(item);
  });
  overlay.dataset.faces = String(faces.length);
  overlay.dataset.updates = String(Number(overlay.dataset.updates) + 1);
  return faces;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || `${response.status} ${response.statusText}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

async function predict(body, contentType) {
  const options = { method: "POST", body };
  if (contentType) options.headers = { "Content-Type": contentType };
  const response = await fetch("/api/predict", options);
  if (!response.ok) {
    const error = new Error(await errorText(response));
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 1;
    throw error;
  }
  return response.json();
}

// ------------------------------------------------------------------ photos

async function sendPhoto(file) {
  if (!file) return;
  await stopCamera();
  if (file.size > limits.max_upload) {
    setStatus(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the server takes at most ` +
              `${(limits.max_upload / 1e6).toFixed(1)} MB.`, true);
    return;
  }
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  photo.src = photoUrl;
  photo.hidden = false;
  video.hidden = true;
  stage.hidden = false;
  overlay.replaceChildren();
  facesList.replaceChildren();
  setStatus(`Looking for faces in ${file.name}\u2026`);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const answer = await predict(form);
    const faces = drawFaces(answer);
    setStatus(faces.length ? `${faces.length} face(s) in ${file.name}.`
                           : `No face in ${file.name}: ${answer.records[0].reason}.`);
  } catch (error) {
    stage.hidden = true;
    setStatus(`${file.name}: ${error.message}`, true);
  }
}

$("file").addEventListener("change", (event) => sendPhoto(event.target.files[0]));

document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/")) || event.dataTransfer.files[0];
  sendPhoto(file);
});

// ------------------------------------------------------------------ camera

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function grabFrame(canvas) {
  const scale = Math.min(1, FRAME_MAX_WIDTH / video.videoWidth);
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

async function cameraLoop(session) {
  const canvas = document.createElement("canvas");
  let frames = 0;
  const began = performance.now();
  while (session.running) {
    const started = performance.now();
    if (video.videoWidth > 0) {
      try {
        const answer = await predict(await grabFrame(canvas), "image/jpeg");
        if (!session.running) break;
        const faces = drawFaces(answer);
        frames += 1;
        const rate = (1000 * frames) / (performance.now() - began);
        setStatus(`Camera: ${faces.length} face(s), ${rate.toFixed(1)} frames/s analysed.`);
      } catch (error) {
        if (!session.running) break;
        setStatus(`Camera: ${error.message}`, true);
        await sleep(error.status === 503 ? 1000 * error.retryAfter : 1000);
      }
    }
    await sleep(Math.max(0, FRAME_INTERVAL_MS - (performance.now() - started)));
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser offers no camera here (the page must come from localhost or https).", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    setStatus(`The camera could not be opened: ${error.message}`, true);
    return;
  }
  camera = { stream, running: true };
  video.srcObject = stream;
  video.hidden = false;
  photo.hidden = true;
  stage.hidden = false;
  overlay.replaceChildren();
  facesList.replaceChildren();
  toggle.textContent = "Stop camera";
  setStatus("Camera on.");
  await video.play().catch(() => {});
  cameraLoop(camera);
}

async function stopCamera() {
  if (!camera) return;
  camera.running = false;
  camera.stream.getTracks().forEach((track) => track.stop());
  camera = null;
  video.srcObject = null;
  toggle.textContent = "Start camera";
  setStatus("Camera off.");
}

toggle.addEventListener("click", () => (camera ? stopCamera() : startCamera()));

// ------------------------------------------------------------------ the model

fetch("/api/model")
  .then((response) => response.json())
  .then((model) => {
    limits = model;
    const accuracy = model.scores && model.scores.accuracy !== undefined
      ? `, ${(100 * model.scores.accuracy).toFixed(1)}% accuracy on its test split` : "";
    $("model").textContent = `Model ${model.name} (${model.family}${accuracy}); faces by ${model.detector}.`;
  })
  .catch(() => setStatus("The server did not describe its model.", true));
