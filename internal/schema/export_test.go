package schema

import (
	"context"
	"io/fs"

	"github.com/jackc/pgx/v5"
)

// InstallFrom is Install with the scripts of fsys (laid out as package sql's Files), so tests
// can install an earlier version's layout or a changed script.
func InstallFrom(ctx context.Context, conn *pgx.Conn, opts Options, fsys fs.FS) (Report, error) {
	return install(ctx, conn, opts, fsys)
}
