package backoff

import (
	"testing"
	"time"
)

func TestDelayGrowsAndStaysWithinBounds(t *testing.T) {
	t.Parallel()
	minD, maxD := 100*time.Millisecond, 30*time.Second
	for attempt := -1; attempt < 60; attempt++ {
		want := minD << min(max(attempt-1, 0), 20)
		if want > maxD {
			want = maxD
		}
		for i := 0; i < 50; i++ {
			d := Delay(attempt, minD, maxD)
			if d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", attempt, d, want/2, want)
			}
		}
	}
	if d := Delay(3, 0, time.Second); d != 0 {
		t.Fatalf("Delay with min 0 = %s, want 0", d)
	}
}

func TestDelayIsJittered(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]bool{}
	for i := 0; i < 100; i++ {
		seen[Delay(4, time.Second, time.Minute)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("100 delays took only %d values: not jittered", len(seen))
	}
}
