package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/telemetry"
)

// The headers of a dead letter.
const (
	HeaderReason    = "Verdict-Reason"
	HeaderError     = "Verdict-Error"
	HeaderStreamSeq = "Verdict-Stream-Seq"
	HeaderSubject   = "Verdict-Subject"
	HeaderTruncated = "Verdict-Truncated" // original size in bytes, when the payload was cut
)

type deadLetter struct {
	reason telemetry.Reason
	msg    *nats.Msg
	fut    jetstream.PubAckFuture // nil when the async publish could not start
}

// deadLetter starts publishing the rejected message m, of stream sequence
// sseq.
func (in *Ingester) deadLetter(m *nats.Msg, sseq uint64, rerr *telemetry.Error) deadLetter {
	seq := strconv.FormatUint(sseq, 10)
	dl := nats.NewMsg(in.cfg.RejectedPrefix + "." + string(rerr.Reason))
	dl.Header.Set(HeaderReason, string(rerr.Reason))
	detail := string(rerr.Reason)
	if rerr.Err != nil {
		detail = rerr.Err.Error()
	}
	dl.Header.Set(HeaderError, headerValue(detail))
	dl.Header.Set(HeaderStreamSeq, seq)
	dl.Header.Set(HeaderSubject, m.Subject)
	dl.Header.Set(jetstream.MsgIDHeader, in.cfg.Stream+"/"+seq)
	dl.Data = m.Data
	if len(dl.Data) > in.cfg.TruncateRejected {
		dl.Header.Set(HeaderTruncated, strconv.Itoa(len(dl.Data)))
		dl.Data = dl.Data[:in.cfg.TruncateRejected]
	}
	d := deadLetter{reason: rerr.Reason, msg: dl}
	fut, err := in.dl.PublishMsgAsync(dl)
	if err == nil {
		d.fut = fut
	}
	return d
}

// awaitDeadLetters waits for the dead letters' PubAcks, for at most
// DeadLetterTimeout in all, retrying a refused one once synchronously. A
// dead letter that cannot be stored (no stream, a denied permission, which
// the server reports only on the connection's error handler, so the PubAck
// never comes) is logged and counted, and never stops the consumer.
func (in *Ingester) awaitDeadLetters(ctx context.Context, dead []deadLetter) {
	if len(dead) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.DeadLetterTimeout)
	defer cancel()
	for _, d := range dead {
		err := errors.New("async publish refused")
		if d.fut != nil {
			select {
			case <-d.fut.Ok():
				continue
			case err = <-d.fut.Err():
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if ctx.Err() == nil {
			if _, err = in.dl.PublishMsg(ctx, d.msg); err == nil {
				continue
			}
		}
		in.dlErrors.Add(1)
		in.log.Error("ingest: dead letter lost", "reason", d.reason,
			HeaderStreamSeq, d.msg.Header.Get(HeaderStreamSeq), "err", err)
	}
}

// headerValue makes s a single-line header value of bounded length.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}

// deadLetterPublisher returns a JetStream context on js's connection whose
// asynchronous publishes time out after timeout: a dead letter whose PubAck
// never comes (a denied permission is reported only to the connection's
// error handler) must not stay pending forever, whatever options the
// caller's context has.
func deadLetterPublisher(js jetstream.JetStream, timeout time.Duration, log *slog.Logger) jetstream.JetStream {
	nc := js.Conn()
	if nc == nil {
		return js
	}
	o := js.Options()
	opts := []jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(timeout)}
	var pub jetstream.JetStream
	var err error
	switch {
	case o.Domain != "":
		pub, err = jetstream.NewWithDomain(nc, o.Domain, opts...)
	case o.APIPrefix != "":
		pub, err = jetstream.NewWithAPIPrefix(nc, o.APIPrefix, opts...)
	default:
		pub, err = jetstream.New(nc, opts...)
	}
	if err != nil {
		log.Warn("ingest: dead letters use the caller's JetStream context", "err", err)
		return js
	}
	return pub
}
