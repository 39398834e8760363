// Package logbuf is a buffer that may be written from several goroutines (a logger, a child
// process's output) and read while it is still being written: the tests' relay logs and the
// bench's relay output.
package logbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer collects what is written to it. Its zero value is ready to use. It is a
// zapcore.WriteSyncer and an io.Writer.
type Buffer struct {
	// Max bounds what is kept (0: no bound); writes beyond it are dropped, reported written.
	Max int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p (or drops it once Max bytes are kept).
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Max > 0 && s.b.Len() > s.Max {
		return len(p), nil
	}
	return s.b.Write(p)
}

// Sync does nothing: everything is in memory.
func (s *Buffer) Sync() error { return nil }

// String returns everything kept.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tail returns the last n bytes kept, without surrounding white space.
func (s *Buffer) Tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
