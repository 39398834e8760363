// Package tests holds cdc-relay's cross-package integration tests, each against its own real
// PostgreSQL database.
package tests

import (
	"testing"

	"github.com/cdc-relay/cdc-relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
