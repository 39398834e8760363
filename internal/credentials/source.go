package credentials

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// DefaultCheckInterval is how often Source.Get looks at its files (a stat each) at most.
const DefaultCheckInterval = time.Second

// SourceConfig says where a Source finds the credential; see Resolve.
type SourceConfig struct {
	Getenv            func(string) string
	Path              string // the credential store
	MapName, Key      string
	CertFile, KeyFile string // mTLS client certificate and key files (run flags); override the environment's
	// CheckInterval bounds how often the files are stat'ed (default DefaultCheckInterval).
	CheckInterval time.Duration
}

// Origin says where the credential in use came from, for errors after a rotation.
type Origin struct {
	// Where is the map, key and file (or the environment variables) the credential was read from.
	Where string
	// Version counts the credentials read; it grows when a file changed and was read again.
	Version int
	// ReadAt is when this version was read.
	ReadAt time.Time
}

// String describes the origin for errors: `map "m" key "k" in /path` and, after a rotation,
// when the new version was read.
func (o Origin) String() string {
	if o.Version > 1 {
		return fmt.Sprintf("%s, read again at %s after it changed", o.Where, o.ReadAt.UTC().Format(time.RFC3339))
	}
	return o.Where
}

// Source resolves a credential and reads it again when one of its files changes (device,
// inode, size, mode or modification time, checked at most once per CheckInterval, so a
// Kubernetes secret swapped through its ..data symlink is seen too) or after Reload (SIGHUP).
// It is safe for concurrent use.
type Source struct {
	cfg SourceConfig

	mu        sync.Mutex
	cur       Credential
	origin    Origin
	err       error
	files     []string
	stamps    []stamp
	checkedAt time.Time
	stale     bool
}

// stamp identifies a file's content cheaply.
type stamp struct {
	dev, ino uint64
	size     int64
	mode     os.FileMode
	mtime    time.Time
	missing  bool
}

func stampOf(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{missing: true}
	}
	s := stamp{size: fi.Size(), mode: fi.Mode(), mtime: fi.ModTime()}
	s.dev, s.ino = fileID(fi)
	return s
}

// NewSource reads the credential once; its error is the one Get would return.
func NewSource(cfg SourceConfig) (*Source, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = func(string) string { return "" }
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	s := &Source{cfg: cfg}
	s.load(time.Now())
	return s, s.err
}

// load reads the credential and stamps its files. Called with mu held (or before sharing).
func (s *Source) load(now time.Time) {
	c, where, files, err := resolve(s.cfg.Getenv, s.cfg.Path, s.cfg.MapName, s.cfg.Key, s.cfg.CertFile, s.cfg.KeyFile)
	if err == nil {
		err = c.Check()
	}
	s.files, s.stamps = files, make([]stamp, len(files))
	for i, f := range files {
		s.stamps[i] = stampOf(f)
	}
	s.checkedAt, s.stale = now, false
	if where != SourceEnvironment {
		where = fmt.Sprintf("map %q key %q in %s", s.cfg.MapName, s.cfg.Key, where)
	} else if f := s.cfg.Getenv(EnvClientSecretFile); f != "" {
		where = fmt.Sprintf("%s (%s)", EnvClientSecretFile, f)
	} else {
		where = EnvClientID + " and " + EnvClientSecret
	}
	s.origin = Origin{Where: where, Version: s.origin.Version + 1, ReadAt: now}
	if err != nil {
		s.cur, s.err = Credential{}, fmt.Errorf("reading the credential (%s): %w", s.origin, err)
		return
	}
	s.cur, s.err = c, nil
}

// Get returns the current credential, reading it again first when a file changed since it was
// read or Reload was called.
func (s *Source) Get() (Credential, Origin, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale || now.Sub(s.checkedAt) >= s.cfg.CheckInterval {
		changed := s.stale
		for i, f := range s.files {
			if !changed && stampOf(f) != s.stamps[i] {
				changed = true
			}
		}
		if changed {
			s.load(now)
		}
		s.checkedAt = now
	}
	return s.cur, s.origin, s.err
}

// Reload makes the next Get read the credential again, changed or not (SIGHUP).
func (s *Source) Reload() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
}
