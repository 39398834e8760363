//go:build !unix

package credentials

// lockDir is a no-op where flock is unavailable; Save is then not safe against a concurrent Save.
func lockDir(string) (func(), error) { return func() {}, nil }
