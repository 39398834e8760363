package sender

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	refrecv "github.com/cdc-relay/cdc-relay/internal/receiver"
	"github.com/cdc-relay/cdc-relay/mapping"
)

// The sender speaks HTTP/2 to a receiver that offers it (many requests in flight over one
// connection) and HTTP/1.1 to one that does not.
func TestHTTP2WhenTheReceiverOffersIt(t *testing.T) {
	t.Parallel()
	for _, offer := range []bool{true, false} {
		var mu sync.Mutex
		protos := map[string]int{}
		_, cfg, _ := refReceiver(t, refrecv.Config{HTTP2: offer, OnMessage: func(rec refrecv.Received) {
			mu.Lock()
			protos[rec.Proto]++
			mu.Unlock()
		}})
		s := newSender(t, cfg)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				m := customerDelete
				m.UniqueID = string(rune('a' + i))
				res, err := s.Post(context.Background(), mapping.AppendEnvelope(nil, []mapping.Message{m}))
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, res.Status)
			})
		}
		wg.Wait()
		want := "HTTP/1.1"
		if offer {
			want = "HTTP/2.0"
		}
		mu.Lock()
		require.Equal(t, map[string]int{want: 20}, protos, "receiver offering HTTP/2: %v", offer)
		mu.Unlock()
	}
}
