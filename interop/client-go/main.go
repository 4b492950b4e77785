// The Go client (github.com/apache/rocketmq-client-go/v2) against a real `mq serve`: sync,
// async, oneway and batch sends, then a push consumer must read every message back once, with
// body, tags, keys and properties intact. Prints "go: N passed, N failed"; exits 1 on failure.
//
// Usage: client-go NAMESRV, or client-go consume NAMESRV TOPIC N GROUP (a cross-client flow:
// bodies "cross message I" with tag "cross", sent by another client).
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

const topic = "InteropGo"

var passed, failed int

// sent holds what the broker acknowledged: message id -> message sent.
var sent sync.Map

func message(tag string, i, size int) *primitive.Message {
	body := make([]byte, size)
	for b := range body {
		body[b] = byte('a' + (b+i)%26)
	}
	m := primitive.NewMessage(topic, body)
	m.WithTag(tag)
	m.WithKeys([]string{fmt.Sprintf("key-%s-%d", tag, i)})
	m.WithProperty("scenario", tag)
	return m
}

func check(name string, f func() error) {
	if err := f(); err != nil {
		failed++
		fmt.Printf("FAIL %s: %v\n", name, err)
		return
	}
	passed++
	fmt.Printf("PASS %s\n", name)
}

func acked(r *primitive.SendResult, err error, msgs ...*primitive.Message) error {
	if err != nil {
		return err
	}
	if r.Status != primitive.SendOK {
		return fmt.Errorf("status %v", r.Status)
	}
	ids := []string{r.MsgID}
	if len(msgs) > 1 {
		// The Go client gives batched messages no unique key, so its batch MsgID is empty
		// (against Java's broker too): the broker's offset ids, one per message, are the ids
		// consumers see.
		ids = splitIDs(r.OffsetMsgID)
	}
	if len(ids) != len(msgs) {
		return fmt.Errorf("%d ids for %d messages: %q", len(ids), len(msgs), r.MsgID)
	}
	for i, m := range msgs {
		sent.Store(ids[i], m)
	}
	return nil
}

func splitIDs(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func main() {
	rlog.SetLogLevel("error")
	if os.Args[1] == "consume" {
		n, _ := strconv.Atoi(os.Args[4])
		check(fmt.Sprintf("consumes the %d messages another client produced", n), func() error {
			return consumeCross(os.Args[2], os.Args[3], n, os.Args[5])
		})
		fmt.Printf("go: %d passed, %d failed\n", passed, failed)
		if failed > 0 {
			os.Exit(1)
		}
		return
	}
	namesrv := os.Args[1]
	p, err := rocketmq.NewProducer(
		producer.WithNameServer(primitive.NamesrvAddr{namesrv}),
		producer.WithGroupName("pgo"),
		producer.WithInstanceName("pgo"),
		producer.WithRetry(2),
	)
	if err != nil {
		fmt.Println("FAIL producer:", err)
		os.Exit(1)
	}
	if err := p.Start(); err != nil {
		fmt.Println("FAIL producer start:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	check("sync send", func() error {
		m := message("sync", 0, 100)
		r, err := p.SendSync(ctx, m)
		return acked(r, err, m)
	})
	check("sync send, 5000-byte body", func() error {
		m := message("large", 0, 5000)
		r, err := p.SendSync(ctx, m)
		return acked(r, err, m)
	})
	check("async send", func() error {
		m := message("async", 0, 100)
		done := make(chan error, 1)
		err := p.SendAsync(ctx, func(_ context.Context, r *primitive.SendResult, err error) {
			done <- acked(r, err, m)
		}, m)
		if err != nil {
			return err
		}
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no callback within 10 s")
		}
	})
	check("batch of 10", func() error {
		var msgs []*primitive.Message
		for i := 0; i < 10; i++ {
			msgs = append(msgs, message("batch", i, 100))
		}
		r, err := p.SendSync(ctx, msgs...)
		return acked(r, err, msgs...)
	})
	check("oneway send", func() error {
		m := message("oneway", 0, 100)
		if err := p.SendOneWay(ctx, m); err != nil {
			return err
		}
		// Oneway has no result: the consumer looks for it by its unique key.
		sent.Store(m.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex), m)
		return nil
	})
	check("push consumer reads every message once", func() error { return consumeAll(namesrv) })
	_ = p.Shutdown()
	fmt.Printf("go: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func consumeAll(namesrv string) error {
	want := 0
	sent.Range(func(_, _ any) bool { want++; return true })
	seen := map[string]int{}
	var wrong []string
	return consumeUntil(namesrv, topic, "cgo", func(m *primitive.MessageExt) bool {
		w, ok := sent.Load(m.MsgId)
		if !ok {
			return false
		}
		s := w.(*primitive.Message)
		if !bytes.Equal(s.Body, m.Body) || s.GetTags() != m.GetTags() || s.GetKeys() != m.GetKeys() || s.GetProperty("scenario") != m.GetProperty("scenario") {
			wrong = append(wrong, fmt.Sprintf("%s (%s, %d bytes)", m.MsgId, m.GetTags(), len(m.Body)))
		}
		seen[m.MsgId]++
		return len(seen) == want
	}, func() error {
		if len(seen) != want {
			return fmt.Errorf("read %d of %d", len(seen), want)
		}
		if len(wrong) > 0 {
			return fmt.Errorf("differ from what was sent: %v", wrong)
		}
		for id, n := range seen {
			if n > 1 {
				return fmt.Errorf("%s read %d times", id, n)
			}
		}
		return nil
	})
}

// consumeCross reads the n "cross message I" bodies another client sent to topic.
func consumeCross(namesrv, topic string, n int, group string) error {
	bodies := map[string]bool{}
	return consumeUntil(namesrv, topic, group, func(m *primitive.MessageExt) bool {
		if m.GetTags() == "cross" {
			bodies[string(m.Body)] = true
		}
		return len(bodies) == n
	}, func() error {
		for i := 0; i < n; i++ {
			if !bodies[fmt.Sprintf("cross message %d", i)] {
				return fmt.Errorf("missing cross message %d (got %d)", i, len(bodies))
			}
		}
		return nil
	})
}

// consumeUntil runs a push consumer of topic from the first offset, handing every message to
// onMessage until it returns true (or 60 s pass), then stops it and returns what check says.
// onMessage and check run under one lock.
func consumeUntil(namesrv, topic, group string, onMessage func(*primitive.MessageExt) bool, check func() error) error {
	var mu sync.Mutex
	done := make(chan struct{})
	closed := false
	c, err := rocketmq.NewPushConsumer(
		consumer.WithGroupName(group),
		consumer.WithInstance(group),
		consumer.WithNameServer(primitive.NamesrvAddr{namesrv}),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
	)
	if err != nil {
		return err
	}
	err = c.Subscribe(topic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if onMessage(m) && !closed {
				closed = true
				close(done)
			}
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
	}
	_ = c.Shutdown()
	mu.Lock()
	defer mu.Unlock()
	return check()
}
