// The box editor of the Labelling page: the phone's image with boxes that the engineer draws, moves,
// resizes, deletes and classifies with the mouse or the keyboard. Boxes live in pixels of the stored
// image; every finished edit is sent to Python as the state value "drawing": the boxes with the
// revision (the phone) they were drawn on.
//
// Mouse: drag on the image to draw a box; drag a box to move it; drag a corner to resize it; click a
// box to select it. Keys (with the editor focused): 1-9 set the class of the selected box (and of the
// next box drawn), A adds a box in the middle, Delete or Backspace removes the selected one, arrows
// move it by one pixel (ten with Shift), Alt+arrows resize it, Tab selects the next box, Escape none.

const HANDLE = 7; // screen pixels around a corner that grab it
const MIN_SIZE = 3; // image pixels: smaller drags are clicks, not boxes
const COLOURS = ["#ff3b30", "#ff9500", "#af52de", "#007aff", "#34c759", "#ffcc00"];

function clampBox(box, width, height) {
  const x1 = Math.max(0, Math.min(box.x1, box.x2));
  const x2 = Math.min(width, Math.max(box.x1, box.x2));
  const y1 = Math.max(0, Math.min(box.y1, box.y2));
  const y2 = Math.min(height, Math.max(box.y1, box.y2));
  return { class_name: box.class_name, x1: Math.round(x1), y1: Math.round(y1), x2: Math.round(x2), y2: Math.round(y2) };
}

function copyBoxes(boxes) {
  return (boxes || []).map((b) => ({ class_name: b.class_name, x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2 }));
}

function build(root) {
  const wrap = document.createElement("div");
  wrap.className = "box-editor";
  wrap.tabIndex = 0;
  wrap.setAttribute("role", "application");
  wrap.setAttribute("aria-label", "Box editor: drag on the image to draw a box");
  wrap.innerHTML = `
    <div class="toolbar">
      <label>Class <select class="class-select" aria-label="Class of the selected box"></select></label>
      <button type="button" class="delete" title="Delete the selected box (Delete)">Delete box</button>
      <button type="button" class="clear" title="Remove every box">Remove all boxes</button>
      <button type="button" class="reset" title="Start again from the model's boxes">Model's boxes</button>
      <span class="count" aria-live="polite"></span>
    </div>
    <canvas class="canvas" role="img"></canvas>
    <div class="message" role="alert"></div>`;
  root.appendChild(wrap);
  return wrap;
}

function createEditor(root) {
  const wrap = build(root);
  const canvas = wrap.querySelector("canvas");
  const context = canvas.getContext("2d");
  const select = wrap.querySelector(".class-select");
  const count = wrap.querySelector(".count");
  const message = wrap.querySelector(".message");
  const editor = {
    revision: null,
    boxes: [],
    modelBoxes: [],
    classes: [],
    colours: {},
    width: 1,
    height: 1,
    image: null,
    selected: -1,
    drawClass: null,
    drag: null,
    send: () => {},
  };

  const scale = () => canvas.width / editor.width;
  // The page sends each class's colour (the same as on every other page); the palette is a fallback.
  const colourOf = (name) => editor.colours[name] || COLOURS[Math.max(0, editor.classes.indexOf(name)) % COLOURS.length];

  function emit() {
    editor.send(copyBoxes(editor.boxes));
  }

  function redraw() {
    const shown = wrap.clientWidth || 640;
    const cssWidth = Math.max(200, shown);
    canvas.width = Math.round(cssWidth);
    canvas.height = Math.round((cssWidth * editor.height) / editor.width);
    canvas.style.width = `${canvas.width}px`;
    canvas.style.height = `${canvas.height}px`;
    const s = scale();
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (editor.image) context.drawImage(editor.image, 0, 0, canvas.width, canvas.height);
    context.font = "12px sans-serif";
    editor.boxes.forEach((box, index) => {
      const colour = colourOf(box.class_name);
      const x = box.x1 * s;
      const y = box.y1 * s;
      const w = (box.x2 - box.x1) * s;
      const h = (box.y2 - box.y1) * s;
      context.lineWidth = index === editor.selected ? 3 : 2;
      context.strokeStyle = colour;
      context.setLineDash(index === editor.selected ? [6, 3] : []);
      context.strokeRect(x, y, w, h);
      context.setLineDash([]);
      const label = `${index + 1} ${box.class_name}`;
      const textWidth = context.measureText(label).width + 6;
      context.fillStyle = colour;
      context.fillRect(x, Math.max(0, y - 15), textWidth, 15);
      context.fillStyle = "#ffffff";
      context.fillText(label, x + 3, Math.max(11, y - 4));
      if (index === editor.selected) {
        for (const [cx, cy] of corners(box)) {
          context.fillStyle = "#ffffff";
          context.fillRect(cx * s - 4, cy * s - 4, 8, 8);
          context.strokeRect(cx * s - 4, cy * s - 4, 8, 8);
        }
      }
    });
    const n = editor.boxes.length;
    count.textContent = `${n} box${n === 1 ? "" : "es"}`;
    canvas.setAttribute(
      "aria-label",
      n ? `Phone image with ${n} box${n === 1 ? "" : "es"}: ${editor.boxes.map((b) => b.class_name).join(", ")}` : "Phone image with no boxes",
    );
    wrap.querySelector(".delete").disabled = editor.selected < 0;
    if (editor.selected >= 0) select.value = editor.boxes[editor.selected].class_name;
    else if (editor.drawClass) select.value = editor.drawClass;
  }

  function corners(box) {
    return [
      [box.x1, box.y1],
      [box.x2, box.y1],
      [box.x1, box.y2],
      [box.x2, box.y2],
    ];
  }

  // The pointer in image pixels. The canvas's box is read at every event, so scrolling, zoom, a
  // resized window or CSS scaling between two events cannot shift a box: only where the canvas is
  // on screen now, and how large it is shown, count.
  function pointOf(event) {
    const rect = canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return { x: 0, y: 0 };
    const x = ((event.clientX - rect.left) / rect.width) * editor.width;
    const y = ((event.clientY - rect.top) / rect.height) * editor.height;
    return { x: Math.max(0, Math.min(editor.width, x)), y: Math.max(0, Math.min(editor.height, y)) };
  }

  function hit(point) {
    const grab = HANDLE / scale();
    if (editor.selected >= 0) {
      const box = editor.boxes[editor.selected];
      const names = ["nw", "ne", "sw", "se"];
      const found = corners(box).findIndex(([cx, cy]) => Math.abs(cx - point.x) <= grab && Math.abs(cy - point.y) <= grab);
      if (found >= 0) return { index: editor.selected, corner: names[found] };
    }
    // the smallest box under the pointer, so a box inside another can still be picked
    let best = -1;
    let bestArea = Infinity;
    editor.boxes.forEach((box, index) => {
      if (point.x >= box.x1 && point.x <= box.x2 && point.y >= box.y1 && point.y <= box.y2) {
        const area = (box.x2 - box.x1) * (box.y2 - box.y1);
        if (area < bestArea) {
          best = index;
          bestArea = area;
        }
      }
    });
    return best >= 0 ? { index: best, corner: null } : null;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    // Read the pointer before focusing, and focus without scrolling: a focus that scrolls the page
    // moves the canvas under a pointer whose clientY was taken before the scroll.
    const point = pointOf(event);
    wrap.focus({ preventScroll: true });
    const target = hit(point);
    canvas.setPointerCapture(event.pointerId);
    if (target) {
      editor.selected = target.index;
      const original = { ...editor.boxes[target.index] };
      editor.drag = { kind: target.corner ? "resize" : "move", corner: target.corner, start: point, original, changed: false };
    } else {
      const name = editor.drawClass || editor.classes[0];
      editor.boxes.push({ class_name: name, x1: point.x, y1: point.y, x2: point.x, y2: point.y });
      editor.selected = editor.boxes.length - 1;
      editor.drag = { kind: "draw", start: point, changed: false };
    }
    redraw();
  });

  canvas.addEventListener("pointermove", (event) => {
    const drag = editor.drag;
    if (!drag) {
      const target = hit(pointOf(event));
      canvas.style.cursor = target ? (target.corner ? (target.corner === "nw" || target.corner === "se" ? "nwse-resize" : "nesw-resize") : "move") : "crosshair";
      return;
    }
    const point = pointOf(event);
    const box = editor.boxes[editor.selected];
    if (drag.kind === "draw") {
      Object.assign(box, { x1: drag.start.x, y1: drag.start.y, x2: point.x, y2: point.y });
    } else if (drag.kind === "move") {
      const w = drag.original.x2 - drag.original.x1;
      const h = drag.original.y2 - drag.original.y1;
      const x1 = Math.max(0, Math.min(editor.width - w, drag.original.x1 + point.x - drag.start.x));
      const y1 = Math.max(0, Math.min(editor.height - h, drag.original.y1 + point.y - drag.start.y));
      Object.assign(box, { x1, y1, x2: x1 + w, y2: y1 + h });
    } else {
      if (drag.corner.includes("w")) box.x1 = point.x;
      if (drag.corner.includes("e")) box.x2 = point.x;
      if (drag.corner.includes("n")) box.y1 = point.y;
      if (drag.corner.includes("s")) box.y2 = point.y;
    }
    drag.changed = true;
    redraw();
  });

  function finish() {
    const drag = editor.drag;
    if (!drag) return;
    editor.drag = null;
    const box = editor.boxes[editor.selected];
    const fixed = clampBox(box, editor.width, editor.height);
    if (fixed.x2 - fixed.x1 < MIN_SIZE || fixed.y2 - fixed.y1 < MIN_SIZE) {
      if (drag.kind === "draw") {
        editor.boxes.splice(editor.selected, 1);
        editor.selected = -1;
      } else {
        Object.assign(box, drag.original); // a resize cannot collapse a box
      }
      redraw();
      return;
    }
    editor.boxes[editor.selected] = fixed;
    redraw();
    if (drag.changed) emit();
  }
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  function setClass(name) {
    if (!editor.classes.includes(name)) return;
    editor.drawClass = name;
    if (editor.selected >= 0 && editor.boxes[editor.selected].class_name !== name) {
      editor.boxes[editor.selected].class_name = name;
      redraw();
      emit();
    } else {
      redraw();
    }
  }

  function remove() {
    if (editor.selected < 0) return;
    editor.boxes.splice(editor.selected, 1);
    editor.selected = -1;
    redraw();
    emit();
  }

  select.addEventListener("change", () => setClass(select.value));
  wrap.querySelector(".delete").addEventListener("click", remove);
  wrap.querySelector(".clear").addEventListener("click", () => {
    editor.boxes = [];
    editor.selected = -1;
    redraw();
    emit();
  });
  wrap.querySelector(".reset").addEventListener("click", () => {
    editor.boxes = copyBoxes(editor.modelBoxes);
    editor.selected = -1;
    redraw();
    emit();
  });

  wrap.addEventListener("keydown", (event) => {
    if (event.target === select) return;
    const key = event.key;
    if (/^[1-9]$/.test(key) && !event.ctrlKey && !event.metaKey) {
      const name = editor.classes[Number(key) - 1];
      if (name) setClass(name);
      event.preventDefault();
      return;
    }
    if ((key === "a" || key === "A") && !event.ctrlKey && !event.metaKey) {
      // a box without the mouse: in the middle, then arrows move it and Alt+arrows size it
      const size = Math.max(MIN_SIZE, Math.round(Math.min(editor.width, editor.height) / 10));
      const x1 = Math.round((editor.width - size) / 2);
      const y1 = Math.round((editor.height - size) / 2);
      editor.boxes.push({ class_name: editor.drawClass || editor.classes[0], x1, y1, x2: x1 + size, y2: y1 + size });
      editor.selected = editor.boxes.length - 1;
      redraw();
      emit();
      event.preventDefault();
      return;
    }
    if (key === "Delete" || key === "Backspace") {
      remove();
      event.preventDefault();
      return;
    }
    if (key === "Escape") {
      editor.selected = -1;
      redraw();
      return;
    }
    if (key === "Tab" && editor.boxes.length && !event.shiftKey && editor.selected < editor.boxes.length - 1) {
      editor.selected += 1;
      redraw();
      event.preventDefault();
      return;
    }
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (key in arrows && editor.selected >= 0) {
      const step = event.shiftKey ? 10 : 1;
      const [dx, dy] = arrows[key].map((v) => v * step);
      const box = { ...editor.boxes[editor.selected] };
      if (event.altKey) {
        box.x2 += dx;
        box.y2 += dy;
      } else {
        const w = box.x2 - box.x1;
        const h = box.y2 - box.y1;
        box.x1 = Math.max(0, Math.min(editor.width - w, box.x1 + dx));
        box.y1 = Math.max(0, Math.min(editor.height - h, box.y1 + dy));
        box.x2 = box.x1 + w;
        box.y2 = box.y1 + h;
      }
      const fixed = clampBox(box, editor.width, editor.height);
      if (fixed.x2 - fixed.x1 >= MIN_SIZE && fixed.y2 - fixed.y1 >= MIN_SIZE) {
        editor.boxes[editor.selected] = fixed;
        redraw();
        emit();
      }
      event.preventDefault();
    }
  });

  const resize = new ResizeObserver(() => redraw());
  resize.observe(wrap);

  editor.update = (data, send) => {
    editor.send = send;
    if (data.revision !== editor.revision) {
      editor.revision = data.revision;
      editor.width = data.width;
      editor.height = data.height;
      editor.classes = data.classes;
      editor.colours = data.colours || {};
      editor.modelBoxes = copyBoxes(data.model_boxes);
      editor.boxes = copyBoxes(data.boxes);
      editor.selected = -1;
      editor.drawClass = editor.drawClass && data.classes.includes(editor.drawClass) ? editor.drawClass : data.classes[0];
      select.innerHTML = "";
      data.classes.forEach((name, index) => {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = `${index + 1} ${name}`;
        select.appendChild(option);
      });
      message.textContent = "";
      editor.image = null;
      const image = new Image();
      image.onload = () => {
        if (editor.revision !== data.revision) return;
        editor.image = image;
        redraw();
      };
      image.onerror = () => {
        message.textContent = "The image cannot be shown in the browser.";
      };
      image.src = data.image;
    }
    redraw();
  };
  editor.destroy = () => resize.disconnect();
  return editor;
}

export default function (component) {
  const { parentElement, data, setStateValue } = component;
  if (!parentElement.__shadowlineBoxEditor) parentElement.__shadowlineBoxEditor = createEditor(parentElement);
  // The boxes travel with the revision (the phone) they were drawn on, so a save can be checked against it.
  parentElement.__shadowlineBoxEditor.update(data, (boxes) => setStateValue("drawing", { revision: data.revision, boxes }));
}
