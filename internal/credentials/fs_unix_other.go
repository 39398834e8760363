//go:build unix && !linux

package credentials

// readOnlyFS reports false: the read-only mount exception (Kubernetes secret volumes) is made on
// Linux only, so elsewhere every secret file needs mode 0600.
func readOnlyFS(int) (bool, error) { return false, nil }
