// Heat-map viewer: zoom and pan, window/level, heat layer on/off and opacity. No network, no dependencies.
//
// Window/level is the linear VOI function of DICOM PS3.3 C.11.2.1.2.1 applied to the decoded 8-bit
// radiograph (which already carries the DICOM's own window): width 256 / centre 128 is the identity,
// i.e. the DICOM window, and is the default. The windowed image is drawn on a canvas through a
// 256-entry look-up table. Zoom and pan are a CSS transform of the stage (radiograph + heat layer);
// the R/L markers sit on the viewport and stay put (the image is never flipped).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const viewport = $("viewport");
  const stage = $("stage");
  const img = $("radiograph");
  const heat = $("heat");
  const slider = $("opacity");
  const toggle = $("toggle");
  const opacityValue = $("opacity-value");
  const widthInput = $("window-width");
  const levelInput = $("window-level");
  const windowValue = $("window-value");
  const zoomValue = $("zoom-value");
  if (!viewport || !stage || !img || !heat || !slider || !toggle) {
    return;
  }
  const DEFAULT_WIDTH = widthInput ? Number(widthInput.defaultValue) : 256;
  const DEFAULT_LEVEL = levelInput ? Number(levelInput.defaultValue) : 128;

  // Heat layer -------------------------------------------------------------------------------
  function applyHeat() {
    const percent = Number(slider.value);
    heat.style.opacity = String(percent / 100);
    heat.classList.toggle("off", !toggle.checked);
    slider.disabled = !toggle.checked;
    if (opacityValue) {
      opacityValue.textContent = percent + " %";
    }
  }
  slider.addEventListener("input", applyHeat);
  toggle.addEventListener("change", applyHeat);
  applyHeat();

  // Window / level ---------------------------------------------------------------------------
  let context = null;
  let source = null;
  let output = null;
  let pending = false;

  function windowLut(width, centre) {
    // PS3.3 C.11.2.1.2.1: y = ((x − (c − 0.5)) / (w − 1) + 0.5) · 255, clamped to [0, 255].
    const lut = new Uint8ClampedArray(256);
    for (let x = 0; x < 256; x += 1) {
      lut[x] = Math.round(((x - (centre - 0.5)) / (width - 1) + 0.5) * 255);
    }
    return lut;
  }

  function renderWindow() {
    pending = false;
    if (!context) {
      return;
    }
    const lut = windowLut(Number(widthInput.value), Number(levelInput.value));
    const from = source.data;
    const to = output.data;
    for (let i = 0; i < from.length; i += 4) {
      const v = lut[from[i]];
      to[i] = v;
      to[i + 1] = v;
      to[i + 2] = v;
      to[i + 3] = 255;
    }
    context.putImageData(output, 0, 0);
  }

  function applyWindow() {
    if (!widthInput || !levelInput) {
      return;
    }
    const width = Number(widthInput.value);
    const level = Number(levelInput.value);
    const dicom = width === DEFAULT_WIDTH && level === DEFAULT_LEVEL;
    if (windowValue) {
      windowValue.textContent = dicom ? "DICOM window" : "W " + width + " / L " + level;
    }
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(renderWindow);
    }
  }

  function setWindow(width, level) {
    widthInput.value = String(Math.round(width));
    levelInput.value = String(Math.round(level));
    applyWindow();
  }

  function setupCanvas() {
    if (!widthInput || !levelInput || !img.naturalWidth) {
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    canvas.id = "windowed";
    canvas.className = "radiograph";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", img.alt);
    context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(img, 0, 0);
    source = context.getImageData(0, 0, canvas.width, canvas.height);
    output = context.createImageData(canvas.width, canvas.height);
    stage.insertBefore(canvas, img);
    img.classList.add("replaced");
    applyWindow();
  }
  if (widthInput && levelInput) {
    widthInput.addEventListener("input", applyWindow);
    levelInput.addEventListener("input", applyWindow);
    $("window-reset").addEventListener("click", () => setWindow(DEFAULT_WIDTH, DEFAULT_LEVEL));
  }
  if (img.complete && img.naturalWidth) {
    setupCanvas();
  } else {
    img.addEventListener("load", setupCanvas, { once: true });
  }

  // Zoom and pan -----------------------------------------------------------------------------
  let scale = 1;
  let tx = 0;
  let ty = 0;

  function maxScale() {
    return Math.max(8, (4 * img.naturalWidth) / Math.max(1, viewport.clientWidth));
  }

  function applyView() {
    const w = viewport.clientWidth;
    const h = viewport.clientHeight;
    scale = Math.min(Math.max(scale, 1), maxScale());
    tx = Math.min(0, Math.max(w - w * scale, tx));
    ty = Math.min(0, Math.max(h - h * scale, ty));
    stage.style.transform = "translate(" + tx + "px, " + ty + "px) scale(" + scale + ")";
    viewport.classList.toggle("zoomed", scale > 1);
    if (zoomValue) {
      zoomValue.textContent = scale === 1 ? "Fit" : scale.toFixed(1) + "×";
    }
  }

  function zoomAt(factor, x, y) {
    const next = Math.min(Math.max(scale * factor, 1), maxScale());
    tx = x - ((x - tx) * next) / scale;
    ty = y - ((y - ty) * next) / scale;
    scale = next;
    applyView();
  }

  function zoomCentre(factor) {
    zoomAt(factor, viewport.clientWidth / 2, viewport.clientHeight / 2);
  }

  function fit() {
    scale = 1;
    tx = 0;
    ty = 0;
    applyView();
  }

  function actualSize() {
    // One image pixel per CSS pixel, centred on what is in the middle of the viewport now.
    zoomCentre(img.naturalWidth / Math.max(1, viewport.clientWidth) / scale);
  }

  $("zoom-in").addEventListener("click", () => zoomCentre(1.5));
  $("zoom-out").addEventListener("click", () => zoomCentre(1 / 1.5));
  $("zoom-fit").addEventListener("click", fit);
  $("zoom-actual").addEventListener("click", actualSize);

  viewport.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const box = viewport.getBoundingClientRect();
      zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
    },
    { passive: false },
  );

  let drag = null;
  viewport.addEventListener("pointerdown", (event) => {
    const windowing = event.shiftKey || event.button === 2;
    if (event.button !== 0 && !windowing) {
      return;
    }
    drag = {
      mode: windowing && widthInput ? "window" : "pan",
      x: event.clientX,
      y: event.clientY,
      width: widthInput ? Number(widthInput.value) : 0,
      level: levelInput ? Number(levelInput.value) : 0,
      tx: tx,
      ty: ty,
    };
    viewport.setPointerCapture(event.pointerId);
    viewport.classList.add("dragging");
    viewport.focus({ preventScroll: true });
  });
  viewport.addEventListener("pointermove", (event) => {
    if (!drag) {
      return;
    }
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.mode === "pan") {
      tx = drag.tx + dx;
      ty = drag.ty + dy;
      applyView();
    } else {
      // Across: wider/narrower window; up/down: brighter/darker (a lower/higher level).
      setWindow(Math.min(256, Math.max(2, drag.width + dx)), Math.min(255, Math.max(0, drag.level + dy)));
    }
  });
  function endDrag() {
    drag = null;
    viewport.classList.remove("dragging");
  }
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);
  viewport.addEventListener("contextmenu", (event) => event.preventDefault());
  viewport.addEventListener("dblclick", fit);

  const PAN_STEP = 40;
  viewport.addEventListener("keydown", (event) => {
    const keys = {
      "+": () => zoomCentre(1.5),
      "=": () => zoomCentre(1.5),
      "-": () => zoomCentre(1 / 1.5),
      _: () => zoomCentre(1 / 1.5),
      0: fit,
      1: actualSize,
      ArrowLeft: () => ((tx += PAN_STEP), applyView()),
      ArrowRight: () => ((tx -= PAN_STEP), applyView()),
      ArrowUp: () => ((ty += PAN_STEP), applyView()),
      ArrowDown: () => ((ty -= PAN_STEP), applyView()),
      h: () => ((toggle.checked = !toggle.checked), applyHeat()),
      H: () => ((toggle.checked = !toggle.checked), applyHeat()),
    };
    const action = keys[event.key];
    if (action && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      action();
    }
  });
  window.addEventListener("resize", applyView);
  applyView();
})();
