package credentials

import "golang.org/x/sys/unix"

// readOnlyFS reports whether the open file fd sits on a read-only mount (statfs ST_RDONLY,
// which reflects the mount's own flags, bind mounts included).
func readOnlyFS(fd int) (bool, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return false, err
	}
	return fs.Flags&unix.ST_RDONLY != 0, nil
}
