// Timers that poll fast while the page is visible and slowly while it is hidden, and poll at once
// when it is shown again. `stop()` ends them (the router calls it when the view changes).

export function poller(task, { visibleMs, hiddenMs }) {
  let timer = null;
  let stopped = false;
  let running = false;

  async function tick() {
    if (stopped || running) return;
    running = true;
    clearTimeout(timer);
    try {
      await task();
    } catch (err) {
      console.warn("poll failed:", err);
    } finally {
      running = false;
      if (!stopped) timer = setTimeout(tick, document.visibilityState === "hidden" ? hiddenMs : visibleMs);
    }
  }

  function onVisibility() {
    if (document.visibilityState === "visible") tick();
  }

  document.addEventListener("visibilitychange", onVisibility);
  tick();
  return {
    now: tick,
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}
