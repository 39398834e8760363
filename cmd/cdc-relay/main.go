// Command cdc-relay captures CE customer and transaction changes in PostgreSQL queues and
// delivers them to a third-party receiver as authenticated HTTPS POSTs. See README.md.
package main

import (
	"os"

	"github.com/cdc-relay/cdc-relay/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.StdEnv()))
}
