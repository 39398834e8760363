// Package packaging checks, offline, what can be checked of docker-compose.yml and the
// Dockerfile on a machine without a Docker engine.
package packaging

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/cdc-relay/cdc-relay/internal/cli"
)

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

func TestComposeFileHasWhatTheRelayNeeds(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var doc struct {
		Services map[string]service `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(b, &doc), "docker-compose.yml must parse (anchors and merges included)")
	pg := doc.Services["postgres"]
	require.Contains(t, strings.Join(pg.Command, " "), "wal_level=logical", "the relay's replication wake-up needs wal_level=logical")
	relay := doc.Services["relay"]
	require.Equal(t, "run", relay.Command[0])
	require.Contains(t, relay.Environment["DATABASE_URL"], "@postgres:5432/")
	require.NotEmpty(t, relay.Environment["CDC_RELAY_CLIENT_ID"])
	require.NotEmpty(t, relay.Environment["CDC_RELAY_CLIENT_SECRET"])
	require.Equal(t, "service_completed_successfully", relay.DependsOn["config-enable"].Condition)
	require.Equal(t, "install", doc.Services["install"].Command[0])
	require.Equal(t, "service_healthy", doc.Services["install"].DependsOn["postgres"].Condition)
	require.Contains(t, strings.Join(doc.Services["receiver"].Command, " "), "--hostname receiver",
		"the receiver's certificate must name the host the relay dials")
	// Every cdc-relay command the compose file runs exists and accepts its flags.
	for name, s := range doc.Services {
		if name == "postgres" {
			continue
		}
		// -h after the flags (so each is parsed and checked), or right after the command when
		// it takes positional arguments (flag parsing stops at the first of those).
		args := append(append([]string{}, s.Command...), "-h")
		if len(s.Command) > 1 && !strings.HasPrefix(s.Command[1], "-") {
			args = append([]string{s.Command[0], "-h"}, s.Command[1:]...)
		}
		var out strings.Builder
		code := cli.Main(args, cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }})
		require.Equal(t, 0, code, "service %s: cdc-relay %v: %s", name, s.Command, out.String())
	}
}

func TestComposeConfigValidatesWhenDockerComposeIsInstalled(t *testing.T) {
	// `docker compose config` (the v2 plugin) or `docker-compose config` (v1) validate the file
	// fully without a Docker engine; TestComposeFileHasWhatTheRelayNeeds checks its structure
	// either way.
	var cmd *exec.Cmd
	if docker, err := exec.LookPath("docker"); err == nil && exec.Command(docker, "compose", "version").Run() == nil {
		cmd = exec.Command(docker, "compose", "-f", "../../docker-compose.yml", "config", "-q")
	} else if path, err := exec.LookPath("docker-compose"); err == nil {
		cmd = exec.Command(path, "-f", "../../docker-compose.yml", "config", "-q")
	} else {
		t.Skip("neither `docker compose` nor docker-compose is installed: the full compose validation did not run " +
			"(TestComposeFileHasWhatTheRelayNeeds still checked the file's structure offline)")
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
}

func TestDockerfileBuildsTheCommand(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)
	s := string(b)
	require.Contains(t, s, "go build")
	require.Contains(t, s, "./cmd/cdc-relay")
	require.Contains(t, s, "USER nonroot")
}
