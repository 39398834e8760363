package relay

import "sync/atomic"

// Bell is a test doorbell (internal and external tests), rung by the test after it queues rows.
type Bell struct {
	queued, config chan struct{}
	resync         atomic.Bool
}

// NewBell returns a Bell that has not rung.
func NewBell() *Bell { return &Bell{queued: make(chan struct{}, 1), config: make(chan struct{}, 1)} }

func (b *Bell) Queued() <-chan struct{}        { return b.queued }
func (b *Bell) ConfigChanged() <-chan struct{} { return b.config }
func (b *Bell) TakeQueued() []uint32           { return nil } // the tests ring after their commits
func (b *Bell) TakeResync() bool               { return b.resync.Swap(false) }

// Ring rings as a committed change does.
func (b *Bell) Ring() {
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
