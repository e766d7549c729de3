package ingest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// puller keeps up to two pull requests of BatchSize outstanding on the
// durable consumer, all answered on one subscription: so the server always
// has a request to deliver to (it does not wait a round trip for the next
// one), and the deliveries arrive on one channel in the order the server
// sent them. (The server serves waiting requests round robin, so requests
// with separate subscriptions, as Consumer.Fetch makes them, would lose the
// order.) It is the pull protocol of nats.go's jetstream.Consumer.Messages
// without a goroutine, timer and allocation per message, and with the
// liveness Ingester.Live needs.
type puller struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	msgs    chan *nats.Msg
	subject string // $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
	inbox   string
	req     []byte // one pull request
	batch   int
	pending int // messages the outstanding requests may still bring
}

// newPuller subscribes and sends the first two pull requests.
func newPuller(js jetstream.JetStream, cfg Config) (*puller, error) {
	nc := js.Conn()
	if nc == nil {
		return nil, errors.New("no NATS connection")
	}
	p := &puller{
		nc: nc,
		// Room for everything two requests can bring and their status
		// messages: a full channel would drop deliveries (nats.go's slow
		// consumer), which the consumer sequence check would then catch.
		msgs:    make(chan *nats.Msg, 2*cfg.BatchSize+16),
		subject: apiPrefix(js.Options()) + "CONSUMER.MSG.NEXT." + cfg.Stream + "." + cfg.Consumer,
		inbox:   nc.NewInbox(),
		req:     fmt.Appendf(nil, `{"batch":%d,"expires":%d}`, cfg.BatchSize, cfg.FetchWait.Nanoseconds()),
		batch:   cfg.BatchSize,
	}
	var err error
	if p.sub, err = nc.ChanSubscribe(p.inbox, p.msgs); err != nil {
		return nil, err
	}
	if err := p.refill(); err != nil {
		_ = p.sub.Unsubscribe()
		return nil, err
	}
	return p, nil
}

// refill sends pull requests until two batches are asked for.
func (p *puller) refill() error {
	for p.pending <= p.batch {
		if err := p.nc.PublishRequest(p.subject, p.inbox, p.req); err != nil {
			return fmt.Errorf("pull request: %w", err)
		}
		p.pending += p.batch
	}
	return nil
}

// next accounts for m, a message from the subscription: a delivery goes
// to deliver, a status is handled (see status). Once the outstanding
// requests can bring no more than one batch, it sends the next pull
// request and reports that a request was answered (in full or by expiry).
func (p *puller) next(m *nats.Msg, deliver func(*nats.Msg) error) (answered bool, err error) {
	isStatus, err := p.status(m)
	if err != nil {
		return false, err
	}
	if !isStatus {
		p.pending--
		if err := deliver(m); err != nil {
			return false, err
		}
	}
	if p.pending > p.batch {
		return false, nil
	}
	return true, p.refill()
}

// close ends the pull: it waits (at most timeout) until the outstanding
// requests are answered or expired, discarding what they bring, and
// unsubscribes. No request may outlive its subscription: the server would
// go on delivering to it, and after a reset (which makes lastCSeq 0) the
// first delivery lost that way would go unnoticed and be covered by a
// later AckAll. What is discarded here is neither handled nor
// acknowledged; Run resets the consumer before it pulls again (or, after
// shutdown, the next process does).
func (p *puller) close(timeout time.Duration) {
	defer func() { _ = p.sub.Unsubscribe() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for p.pending > 0 {
		select {
		case m := <-p.msgs:
			isStatus, err := p.status(m)
			switch {
			case !isStatus:
				p.pending--
			case err != nil:
				p.pending -= min(p.pending, p.batch) // one request ended
			}
		case <-t.C:
			return // the server is gone, or went away
		}
	}
}

// errStatus is a status message that ends the pull: Run sets the consumer
// up again.
type errStatus struct{ code, description string }

func (e *errStatus) Error() string {
	return "pull request ended: " + e.code + " " + e.description
}

// status handles a message that is not a delivery; it reports whether m is
// one. A request that expired (408) gives back what it did not bring; a
// heartbeat (100) is ignored; every other status is an error.
func (p *puller) status(m *nats.Msg) (bool, error) {
	if len(m.Data) > 0 || len(m.Header) == 0 {
		return false, nil
	}
	code := m.Header.Get("Status")
	switch code {
	case "":
		return false, nil
	case "100":
		return true, nil
	case "408":
		left, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages"))
		if err != nil || left < 0 || left > p.pending {
			left = p.pending // unknown: assume nothing more comes, ask again
		}
		p.pending -= left
		return true, nil
	}
	return true, &errStatus{code, m.Header.Get("Description")}
}

// apiPrefix returns the JetStream API prefix of o, as nats.go builds it.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.APIPrefix != "":
		if !strings.HasSuffix(o.APIPrefix, ".") {
			return o.APIPrefix + "."
		}
		return o.APIPrefix
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// ackBody is an AckAll acknowledgement, as jetstream.Msg.Ack sends it.
var ackBody = []byte("+ACK")

// ack acknowledges the delivery whose reply subject is reply, and with
// AckAll every earlier one, without waiting for the server.
func ack(nc *nats.Conn, reply string) error { return nc.Publish(reply, ackBody) }

// unanswered is how many FetchWaits without any message or status from
// the server end the pull (a reconnect that lost the requests, a server
// gone): Run then sets the consumer up again.
const unanswered = 3

var errUnanswered = errors.New("pull requests unanswered")
