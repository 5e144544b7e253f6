import { clearColor, toHex } from './engine/clear';
import { createContext } from './engine/context';
import { GROUND, GROUND_SHARE, layoutBlocks, sourceModules, type Block } from './world-view';

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
  const modules = sourceModules();
  document.body.dataset.modules = String(modules.length);
  let blocks: Block[] = [];
  let laidOut = '';

  const frame = (): void => {
    resize(canvas);
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(color[0], color[1], color[2], color[3]);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (laidOut !== `${canvas.width}x${canvas.height}`) {
      blocks = layoutBlocks(modules, canvas.width, canvas.height);
      laidOut = `${canvas.width}x${canvas.height}`;
    }
    // The world view: the ground, then a block per module of the game (see world-view.ts).
    gl.enable(gl.SCISSOR_TEST);
    gl.scissor(0, 0, canvas.width, Math.floor(canvas.height * GROUND_SHARE));
    gl.clearColor(GROUND[0], GROUND[1], GROUND[2], GROUND[3]);
    gl.clear(gl.COLOR_BUFFER_BIT);
    for (const block of blocks) {
      gl.scissor(block.x + 1, block.y + 1, Math.max(1, block.size - 2), Math.max(1, block.size - 2));
      gl.clearColor(block.color[0], block.color[1], block.color[2], block.color[3]);
      gl.clear(gl.COLOR_BUFFER_BIT);
    }
    gl.disable(gl.SCISSOR_TEST);
    if (document.body.dataset.status === 'booting') setStatus('ok');
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

start();
