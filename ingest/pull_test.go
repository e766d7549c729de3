package ingest

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func statusMsg(code, descr string, pending string) *nats.Msg {
	m := nats.NewMsg("_INBOX.x")
	m.Header.Set("Status", code)
	if descr != "" {
		m.Header.Set("Description", descr)
	}
	if pending != "" {
		m.Header.Set("Nats-Pending-Messages", pending)
	}
	return m
}

// TestPullerStatus: an expired request gives back what it did not bring,
// a heartbeat is ignored, a delivery is not a status, and every other
// status ends the pull.
func TestPullerStatus(t *testing.T) {
	p := &puller{batch: 100, pending: 200}
	user := &nats.Msg{Subject: "verdict.events.r", Data: []byte("{}"), Reply: "$JS.ACK.S.C.1.1.1.1.0"}
	if st, err := p.status(user); st || err != nil {
		t.Fatalf("status(delivery) = %v, %v", st, err)
	}
	if st, err := p.status(statusMsg("100", "Idle Heartbeat", "")); !st || err != nil || p.pending != 200 {
		t.Fatalf("status(heartbeat) = %v, %v, pending %d", st, err, p.pending)
	}
	if st, err := p.status(statusMsg("408", "Request Timeout", "60")); !st || err != nil || p.pending != 140 {
		t.Fatalf("status(408, 60 left) = %v, %v, pending %d; want pending 140", st, err, p.pending)
	}
	if st, err := p.status(statusMsg("408", "Request Timeout", "")); !st || err != nil || p.pending != 0 {
		t.Fatalf("status(408, unknown left) = %v, %v, pending %d; want 0", st, err, p.pending)
	}
	st, err := p.status(statusMsg("409", "Consumer Deleted", ""))
	var es *errStatus
	if !st || !errors.As(err, &es) || es.code != "409" {
		t.Fatalf("status(409) = %v, %v; want an errStatus", st, err)
	}
}

func TestAPIPrefix(t *testing.T) {
	for _, tc := range []struct {
		o    jetstream.JetStreamOptions
		want string
	}{
		{jetstream.JetStreamOptions{}, "$JS.API."},
		{jetstream.JetStreamOptions{Domain: "hub"}, "$JS.hub.API."},
		{jetstream.JetStreamOptions{APIPrefix: "JS.acc"}, "JS.acc."},
		{jetstream.JetStreamOptions{APIPrefix: "JS.acc."}, "JS.acc."},
	} {
		if got := apiPrefix(tc.o); got != tc.want {
			t.Errorf("apiPrefix(%+v) = %q, want %q", tc.o, got, tc.want)
		}
	}
}
