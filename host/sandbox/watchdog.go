package sandbox

import (
	"context"
	"sync"
	"time"
)

// watchdogTick is how often the watchdog looks for runs past their wall
// deadline. Limits.Wall is a last resort (fuel bounds computation), so a
// few milliseconds late is fine.
const watchdogTick = 5 * time.Millisecond

// wallCtx is the context of a run's call into the guest. wazero closes the
// module when it is done (WithCloseOnContextDone), which the watchdog makes
// happen at the wall deadline or when the embedder's context ends. It costs
// one small allocation per run, where context.WithTimeout costs a timer.
type wallCtx struct {
	parent   context.Context
	deadline time.Time
	rs       *runState
	done     chan struct{}
	err      error // set before done is closed
}

func (c *wallCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *wallCtx) Done() <-chan struct{} { return c.done }

func (c *wallCtx) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *wallCtx) Value(key any) any {
	if key == (runKey{}) {
		return c.rs
	}
	return c.parent.Value(key)
}

// watchdog ends the calls whose wallCtx expired. Its goroutine runs only
// while there are calls to watch.
type watchdog struct {
	mu      sync.Mutex
	active  map[*wallCtx]struct{}
	running bool
	stopped bool
}

func (w *watchdog) add(c *wallCtx) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active == nil {
		w.active = map[*wallCtx]struct{}{}
	}
	w.active[c] = struct{}{}
	if !w.running && !w.stopped {
		w.running = true
		go w.loop()
	}
}

func (w *watchdog) remove(c *wallCtx) {
	w.mu.Lock()
	delete(w.active, c)
	w.mu.Unlock()
}

func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func (w *watchdog) loop() {
	t := time.NewTicker(watchdogTick)
	defer t.Stop()
	for now := range t.C {
		w.mu.Lock()
		for c := range w.active {
			var err error
			switch {
			case c.parent.Err() != nil:
				err = c.parent.Err()
			case !now.Before(c.deadline):
				err = context.DeadlineExceeded
			default:
				continue
			}
			delete(w.active, c)
			c.err = err
			close(c.done)
		}
		if len(w.active) == 0 || w.stopped {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}
