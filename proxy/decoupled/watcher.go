package decoupled

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/approve"
)

// checkWorkers bounds the checks (a store read and a PingOne read each) that
// run at once, whatever the number of waiting clients.
const checkWorkers = 8

// watcher wakes the clients that wait (Prefer: wait) on approvals. Each
// approval with at least one waiting client on this replica is checked once
// per interval, by a fixed pool of workers, not once per client: a waiting
// client costs its own (net/http) goroutine, a timer and a few words here,
// and no goroutine of its own.
type watcher struct {
	check func(ctx context.Context, ref string) (bool, *mfa.Flow)
	every time.Duration
	max   int

	ctx    context.Context
	cancel context.CancelFunc
	jobs   chan *watch
	kick   chan struct{}
	done   chan struct{} // closed by stop: every waiter answers now
	wg     sync.WaitGroup

	mu      sync.Mutex
	byID    map[string]*watch
	queue   watchQueue
	waiting int
	closed  bool
}

// watch is one approval with waiting clients.
type watch struct {
	ref     string
	due     time.Time
	index   int // in the queue; -1 when not queued
	waiters int
	busy    bool          // a worker is checking it
	ready   chan struct{} // closed when decided
	flow    *mfa.Flow     // what the deciding check read; set before ready closes
}

func newWatcher(check func(context.Context, string) (bool, *mfa.Flow), every time.Duration, max int) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		check: check, every: every, max: max, ctx: ctx, cancel: cancel,
		jobs: make(chan *watch), kick: make(chan struct{}, 1), done: make(chan struct{}),
		byID: map[string]*watch{},
	}
	w.wg.Add(1 + checkWorkers)
	go w.schedule()
	for range checkWorkers {
		go w.work()
	}
	return w
}

// wait blocks until the approval under ref is decided (flow is what the
// check read, or nil), d passes, ctx ends or the watcher stops. admitted
// is false, at once, when the bound of waiting clients is reached or the
// watcher stopped.
func (w *watcher) wait(ctx context.Context, ref string, d time.Duration) (flow *mfa.Flow, decided, admitted bool) {
	id := approve.ID(ref)
	w.mu.Lock()
	if w.closed || w.waiting >= w.max {
		w.mu.Unlock()
		return nil, false, false
	}
	e := w.byID[id]
	if e == nil {
		e = &watch{ref: ref, index: -1, ready: make(chan struct{}), due: time.Now().Add(w.every)}
		w.byID[id] = e
		heap.Push(&w.queue, e)
		w.nudge()
	}
	e.waiters++
	w.waiting++
	ready := e.ready
	w.mu.Unlock()

	t := time.NewTimer(d)
	select {
	case <-ready:
		decided = true
	case <-t.C:
	case <-ctx.Done():
	case <-w.done:
	}
	t.Stop()

	w.mu.Lock()
	e.waiters--
	w.waiting--
	if decided {
		flow = e.flow
	}
	if e.waiters == 0 && !e.busy && w.byID[id] == e {
		w.forget(id, e)
	}
	w.mu.Unlock()
	return flow, decided, true
}

// notify wakes the clients waiting on ref on this replica: its state
// changed here (an outcome was written).
func (w *watcher) notify(ref string) {
	id := approve.ID(ref)
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.byID[id]; e != nil {
		w.decide(id, e, nil)
	}
}

// decide closes e's ready and forgets it; w.mu is held.
func (w *watcher) decide(id string, e *watch, flow *mfa.Flow) {
	e.flow = flow
	close(e.ready)
	w.forget(id, e)
}

func (w *watcher) forget(id string, e *watch) {
	if e.index >= 0 {
		heap.Remove(&w.queue, e.index)
	}
	if w.byID[id] == e {
		delete(w.byID, id)
	}
}

func (w *watcher) nudge() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// schedule hands due approvals to the workers, in order of due time.
func (w *watcher) schedule() {
	defer w.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		w.mu.Lock()
		var e *watch
		next := time.Hour
		if len(w.queue) > 0 {
			if left := time.Until(w.queue[0].due); left <= 0 {
				e = heap.Pop(&w.queue).(*watch)
				e.busy = true
			} else {
				next = left
			}
		}
		w.mu.Unlock()
		if e != nil {
			select {
			case w.jobs <- e:
			case <-w.done:
				return
			}
			continue
		}
		t.Reset(next)
		select {
		case <-t.C:
		case <-w.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-w.done:
			return
		}
	}
}

func (w *watcher) work() {
	defer w.wg.Done()
	for {
		select {
		case e := <-w.jobs:
			ctx, cancel := context.WithTimeout(w.ctx, max(w.every*5, 10*time.Second))
			decided, flow := w.check(ctx, e.ref)
			cancel()
			id := approve.ID(e.ref)
			w.mu.Lock()
			e.busy = false
			switch {
			case w.byID[id] != e:
				// Decided meanwhile (notify) or forgotten.
			case decided:
				w.decide(id, e, flow)
			case e.waiters > 0:
				e.due = time.Now().Add(w.every)
				heap.Push(&w.queue, e)
				w.nudge()
			default:
				w.forget(id, e)
			}
			w.mu.Unlock()
		case <-w.done:
			return
		}
	}
}

// stop wakes every waiter (they answer the state now) and ends the
// goroutines; later waits are not admitted.
func (w *watcher) stop() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.done)
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

func (w *watcher) stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

func (w *watcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waiting
}

// watchQueue is a min-heap of watches by due time.
type watchQueue []*watch

func (q watchQueue) Len() int           { return len(q) }
func (q watchQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q watchQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *watchQueue) Push(x any) {
	e := x.(*watch)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *watchQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]
	return e
}
