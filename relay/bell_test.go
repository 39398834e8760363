package relay

import (
	"sync"
	"sync/atomic"
)

// Bell is a test doorbell (internal and external tests), rung by the test after it queues rows.
type Bell struct {
	queued, config chan struct{}
	resync         atomic.Bool
	mu             sync.Mutex
	tables         []string // named by the rings since the last TakeQueued
	deleted        map[string]int64
	taken          chan struct{}
}

// NewBell returns a Bell that has not rung.
func NewBell() *Bell { return &Bell{queued: make(chan struct{}, 1), config: make(chan struct{}, 1)} }

func (b *Bell) Queued() <-chan struct{}        { return b.queued }
func (b *Bell) ConfigChanged() <-chan struct{} { return b.config }
func (b *Bell) TakeResync() bool               { return b.resync.Swap(false) }

// TakeDeleted returns the customers NoteDeleted named since the last call, and closes the
// channel Taken returned then.
func (b *Bell) TakeDeleted() map[string]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.deleted
	b.deleted = nil
	if d != nil && b.taken != nil {
		close(b.taken)
		b.taken = nil
	}
	return d
}

// NoteDeleted names a customer's DELETE row for the next TakeDeleted, as the doorbell does for
// a committed one, and returns a channel closed when the relay took it.
func (b *Bell) NoteDeleted(key string, id int64) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deleted == nil {
		b.deleted = map[string]int64{}
	}
	b.deleted[key] = max(b.deleted[key], id)
	if b.taken == nil {
		b.taken = make(chan struct{})
	}
	return b.taken
}

// TakeQueued names no transaction (the tests ring after their commits) and the tables the
// rings named since the last call: "" (any table) for Ring, those given for RingTables.
func (b *Bell) TakeQueued() ([]uint32, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.tables
	b.tables = nil
	return nil, t
}

// Ring rings as a committed change to any table does.
func (b *Bell) Ring() { b.RingTables("") }

// RingTables rings as committed changes to tables do.
func (b *Bell) RingTables(tables ...string) {
	b.mu.Lock()
	b.tables = append(b.tables, tables...)
	b.mu.Unlock()
	select {
	case b.queued <- struct{}{}:
	default:
	}
}

// RingResync rings as a committed resync request does.
func (b *Bell) RingResync() {
	b.resync.Store(true)
	b.Ring()
}

// RingConfig rings as a change to data_sync_config does.
func (b *Bell) RingConfig() {
	select {
	case b.config <- struct{}{}:
	default:
	}
}
