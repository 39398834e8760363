package logbuf

import (
	"sync"
	"testing"
)

func TestBufferConcurrentWritesMaxAndTail(t *testing.T) {
	t.Parallel()
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x"))
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("kept %d bytes, want 800", got)
	}
	capped := Buffer{Max: 10}
	for range 5 {
		if n, err := capped.Write([]byte("abcdef")); n != 6 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := capped.String(); got != "abcdefabcdef" {
		t.Fatalf("capped buffer kept %q", got)
	}
	if got := capped.Tail(4); got != "cdef" {
		t.Fatalf("Tail(4) = %q", got)
	}
}
