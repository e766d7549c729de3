package ingest

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// position is where a message stands in the stream and the consumer, read
// from its JetStream reply subject.
type position struct {
	stream   uint64 // stream sequence
	consumer uint64 // consumer sequence of this delivery
	stored   int64  // unix nanoseconds when the stream stored the message
}

// positionOf reads m's sequences and timestamp without allocating. It
// parses the reply subject as jetstream.Msg.Metadata does (which allocates
// the whole MsgMetadata, its strings included, for every message) and falls
// back to Metadata for a subject it does not recognise.
func positionOf(m *nats.Msg) (position, error) {
	if p, ok := parseAckReply(m.Reply); ok {
		return p, nil
	}
	meta, err := m.Metadata()
	if err != nil {
		return position{}, err
	}
	return position{stream: meta.Sequence.Stream, consumer: meta.Sequence.Consumer,
		stored: meta.Timestamp.UnixNano()}, nil
}

// parseAckReply parses the ack subject of a JetStream delivery:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>   (9 tokens)
//	$JS.ACK.<domain>.<acc hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...]   (11 or more)
//
// as nats.go's parser accepts them. It reports false for anything else,
// including numbers that are not plain decimal digits.
func parseAckReply(s string) (position, bool) {
	rest, ok := strings.CutPrefix(s, "$JS.ACK.")
	if !ok {
		return position{}, false
	}
	// Split the tokens after $JS.ACK without allocating; only the first
	// ten (domain .. pending in the v2 form) are kept, the rest counted.
	var tok [10]string
	n := 0
	for {
		i := strings.IndexByte(rest, '.')
		t := rest
		if i >= 0 {
			t = rest[:i]
		}
		if n < len(tok) {
			tok[n] = t
		}
		n++
		if i < 0 {
			break
		}
		rest = rest[i+1:]
	}
	var sseq, cseq, tm string
	switch {
	case n+2 == 9: // v1
		sseq, cseq, tm = tok[3], tok[4], tok[5]
	case n+2 >= 11: // v2
		sseq, cseq, tm = tok[5], tok[6], tok[7]
	default:
		return position{}, false
	}
	var p position
	var ok1, ok2, ok3 bool
	p.stream, ok1 = decimal(sseq)
	p.consumer, ok2 = decimal(cseq)
	var ts uint64
	ts, ok3 = decimal(tm)
	p.stored = int64(ts)
	return p, ok1 && ok2 && ok3 && ts <= uint64(1<<63-1)
}

// decimal parses a non-empty run of decimal digits that fits in a uint64.
func decimal(s string) (uint64, bool) {
	if s == "" || len(s) > 19 { // 19 digits always fit
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// time returns when the stream stored the message.
func (p position) time() time.Time { return time.Unix(0, p.stored) }
