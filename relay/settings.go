package relay

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrSettings marks Data Sync settings (data_sync_config) the relay cannot deliver with.
var ErrSettings = errors.New("invalid Data Sync settings")

// Settings are the appendix's Data Sync System Configuration settings, read from
// data_sync_config on every start and whenever the table changes.
type Settings struct {
	Enabled           bool
	APIURL            string
	TokenURL          string
	CredentialMapName string
	CredentialKeyName string
	SnapshotAtMove    bool // DataSyncSnapshotMode = move
	// BulkSnapshotAtMove (DataSyncBulkSnapshotMode = move): statements updating many customers
	// are queued as sets, expanded by the relay, also in capture mode.
	BulkSnapshotAtMove bool
	// TokenScope (DataSyncTokenScope) is the space-separated OAuth2 scope asked for; empty
	// asks for none.
	TokenScope string
	// TokenAudience (DataSyncTokenAudience) is sent as the token request's audience parameter
	// (Auth0 and others); empty sends none.
	TokenAudience string
	// TokenAuthStyle (DataSyncTokenAuthStyle) is how the client authenticates to the token
	// endpoint: "auto" (HTTP Basic, then the form body if refused), "basic" or "body".
	TokenAuthStyle string
	// Signing (DataSyncSigning) is "off" or "standard-webhooks" (sign every request).
	Signing string
}

// expandSets tells whether the capture triggers may be writing sets of customers now, so that
// every move should expand them first.
func (s Settings) expandSets() bool { return s.SnapshotAtMove || s.BulkSnapshotAtMove }

// SettingDef is one Data Sync setting: its name in data_sync_config, the default install
// stores ("" for none), whether it is cdc-relay's extension to the appendix's five, and how the
// relay reads it. The values each accepts are checked in the database (data_sync_config_validate,
// sql/repeatable/10_config.sql), so psql and `cdc-relay config set` give the same errors.
type SettingDef struct {
	Name      string
	Default   string
	Extension bool
	apply     func(s *Settings, value string) // value is never empty: an empty one means Default
}

// SettingDefs is the one table of Data Sync settings, in the order `config show` lists them.
// The install SQL (its validation and its default rows), the README's table and the CLI are
// checked against it by TestSettingsAreDefinedOnce.
var SettingDefs = []SettingDef{
	{Name: "DataSyncEnabled", Default: "false", apply: func(s *Settings, v string) { s.Enabled = v == "true" }},
	{Name: "DataSyncApiUrl", apply: func(s *Settings, v string) { s.APIURL = v }},
	{Name: "DataSyncTokenUrl", apply: func(s *Settings, v string) { s.TokenURL = v }},
	{Name: "DataSyncCredentialMapName", Default: "ce_credentials", apply: func(s *Settings, v string) { s.CredentialMapName = v }},
	{Name: "DataSyncCredentialKeyName", Default: "datasync", apply: func(s *Settings, v string) { s.CredentialKeyName = v }},
	{Name: "DataSyncSnapshotMode", Default: "capture", Extension: true, apply: func(s *Settings, v string) { s.SnapshotAtMove = v == "move" }},
	{Name: "DataSyncBulkSnapshotMode", Default: "capture", Extension: true, apply: func(s *Settings, v string) { s.BulkSnapshotAtMove = v == "move" }},
	{Name: "DataSyncTokenScope", Extension: true, apply: func(s *Settings, v string) { s.TokenScope = v }},
	{Name: "DataSyncTokenAudience", Extension: true, apply: func(s *Settings, v string) { s.TokenAudience = v }},
	{Name: "DataSyncTokenAuthStyle", Default: "auto", Extension: true, apply: func(s *Settings, v string) { s.TokenAuthStyle = v }},
	{Name: "DataSyncSigning", Default: "off", Extension: true, apply: func(s *Settings, v string) { s.Signing = v }},
}

// LookupSetting finds a setting by name, case-insensitively as the database does.
func LookupSetting(name string) (SettingDef, bool) {
	for _, d := range SettingDefs {
		if strings.EqualFold(d.Name, strings.TrimSpace(name)) {
			return d, true
		}
	}
	return SettingDef{}, false
}

// DefaultSettings are the settings of a fresh install.
func DefaultSettings() Settings {
	var s Settings
	for _, d := range SettingDefs {
		if d.Default != "" {
			d.apply(&s, d.Default)
		}
	}
	return s
}

// CheckDelivery reports what keeps these settings from being used to deliver, naming the
// setting and the command that fixes it. allowHTTP permits http:// URLs (local testing only).
func (s Settings) CheckDelivery(allowHTTP bool) error {
	for _, u := range []struct{ name, value string }{{"DataSyncApiUrl", s.APIURL}, {"DataSyncTokenUrl", s.TokenURL}} {
		if u.value == "" {
			return fmt.Errorf("%w: %s is not set: run cdc-relay config set %s https://...", ErrSettings, u.name, u.name)
		}
		p, err := url.Parse(u.value)
		if err != nil || p.Host == "" {
			return fmt.Errorf("%w: %s %q is not an absolute URL: run cdc-relay config set %s https://...", ErrSettings, u.name, u.value, u.name)
		}
		switch strings.ToLower(p.Scheme) {
		case "https":
		case "http":
			if !allowHTTP {
				return fmt.Errorf("%w: %s %q is not https: set an https URL, or pass --allow-insecure-http for local testing only", ErrSettings, u.name, u.value)
			}
		default:
			return fmt.Errorf("%w: %s %q: scheme must be https", ErrSettings, u.name, u.value)
		}
	}
	return nil
}
