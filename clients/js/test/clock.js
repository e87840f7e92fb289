// A manual clock for wsserver.js's setTimeout, clearTimeout and now options:
// timers fire only when the test advances the time. Shared by the node tests
// and the browser harness (tests/fixtures/jsclient.html).

export class ManualClock {
  constructor(now = 0) {
    this.now = now;
    this.timers = [];
    this.delays = [];
    this.setTimeout = (f, ms) => {
      const timer = { at: this.now + ms, f, ms };
      this.timers.push(timer);
      this.delays.push(ms);
      return timer;
    };
    this.clearTimeout = (timer) => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** Move the time on by ms, firing each timer due, in order. */
  advance(ms) {
    const until = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at)[0];
      if (!due) {
        break;
      }
      this.timers = this.timers.filter((t) => t !== due);
      this.now = due.at;
      due.f();
    }
    this.now = until;
  }
}
