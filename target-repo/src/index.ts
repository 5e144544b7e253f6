import { clearColor, toHex } from './engine/clear';
import { createContext } from './engine/context';

// The page reports its state on <body data-status> so that tests (and people) can read it:
// "booting" → "ok" after the first cleared frame, "no-webgl2" or "error" otherwise.
type Status = 'booting' | 'ok' | 'no-webgl2' | 'error';

function setStatus(status: Status): void {
  document.body.dataset.status = status;
}

function showMessage(status: Status, message: string): void {
  const box = document.getElementById('message');
  if (box) {
    box.textContent = message;
    box.hidden = false;
  }
  setStatus(status);
}

function resize(canvas: HTMLCanvasElement): void {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
}

function start(): void {
  window.addEventListener('error', (event) => showMessage('error', `Error: ${event.message}`));
  window.addEventListener('unhandledrejection', (event) =>
    showMessage('error', `Error: ${String(event.reason)}`),
  );
  setStatus('booting');

  const canvas = document.getElementById('game');
  if (!(canvas instanceof HTMLCanvasElement)) {
    showMessage('error', 'Error: the page has no <canvas id="game">.');
    return;
  }
  const result = createContext(canvas);
  if (!result.ok) {
    showMessage('no-webgl2', result.message);
    return;
  }
  const { gl } = result;
  const color = clearColor();
  document.body.dataset.clearColor = toHex(color);

  const frame = (): void => {
    resize(canvas);
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(color[0], color[1], color[2], color[3]);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (document.body.dataset.status === 'booting') setStatus('ok');
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

start();
