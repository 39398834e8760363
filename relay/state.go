package relay

// Phase is what the relay is doing, as a type: /readyz and tests decide on it, not on the
// wording of State's text.
type Phase int

// The relay's phases.
const (
	PhaseStarting        Phase = iota // before its first leadership attempt
	PhaseStandby                      // another relay leads
	PhaseDelivering                   // leading and delivering
	PhaseDisabled                     // leading; DataSyncEnabled is false (rows stay queued)
	PhasePaused                       // leading; the settings cannot be delivered with
	PhaseEndpointFailing              // leading; the receiver fails as a whole (probing)
	PhaseReconnecting                 // the session ended; starting again after a backoff
	PhaseStopping                     // letting requests in flight finish
	PhaseStopped
)

// Ready tells whether a relay in this phase is ready (/readyz): leading, and delivering or
// deliberately idle because Data Sync is disabled.
func (p Phase) Ready() bool { return p == PhaseDelivering || p == PhaseDisabled }

// State is the relay's phase and a one-line description of it, for /readyz and logs.
type State struct {
	Phase  Phase
	Detail string // e.g. "standby: relay host pid 42 leads since …"
}

func (s State) String() string { return s.Detail }

// phaseText is the description of the phases that need no detail.
var phaseText = map[Phase]string{
	PhaseStarting:   "starting",
	PhaseDelivering: "delivering",
	PhaseDisabled:   "idle: DataSyncEnabled is false",
	PhaseStopping:   "stopping",
	PhaseStopped:    "stopped",
}

// setState records the phase, with detail or the phase's own text.
func (r *Relay) setState(p Phase, detail string) {
	if detail == "" {
		detail = phaseText[p]
	}
	r.state.Store(State{Phase: p, Detail: detail})
}
