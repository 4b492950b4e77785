// RocketMQ 5's Go gRPC client (rocketmq-clients/golang/v5) against our gRPC proxy: normal, FIFO
// (message group), delayed and transactional sends, then a SimpleConsumer that receives and
// acknowledges every message once, and gets back, with its attempt raised, a message it gave
// back with ChangeInvisibleDuration.
//
// Usage: client-go-grpc ENDPOINT (the client as configured by default: TLS on, any certificate
// taken), or client-go-grpc acl ENDPOINT AK SK (a proxy that checks ACL: calls signed with the
// account). Prints PASS or FAIL per scenario and exits 1 on any failure.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	"github.com/apache/rocketmq-clients/golang/v5/credentials"
)

var passed, failed int

func check(name string, run func() error) {
	if err := run(); err != nil {
		failed++
		fmt.Printf("FAIL %s\t%s\n", name, strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	passed++
	fmt.Printf("PASS %s\n", name)
}

func finish() {
	fmt.Printf("go-grpc: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

func config(endpoint, group string, creds *credentials.SessionCredentials) *rmq.Config {
	return &rmq.Config{Endpoint: endpoint, ConsumerGroup: group, Credentials: creds}
}

// producer starts a producer of `topics`, with a checker that commits when one is given.
func producer(cfg *rmq.Config, checker *rmq.TransactionChecker, topics ...string) (rmq.Producer, error) {
	opts := []rmq.ProducerOption{rmq.WithTopics(topics...)}
	if checker != nil {
		opts = append(opts, rmq.WithTransactionChecker(checker))
	}
	p, err := rmq.NewProducer(cfg, opts...)
	if err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

func message(topic, body, tag string) *rmq.Message {
	m := &rmq.Message{Topic: topic, Body: []byte(body)}
	if tag != "" {
		m.SetTag(tag)
	}
	return m
}

// consumer starts a SimpleConsumer of `group` on `topic` with tag expression `tag`.
func consumer(endpoint, group, topic, tag string, creds *credentials.SessionCredentials) (rmq.SimpleConsumer, error) {
	c, err := rmq.NewSimpleConsumer(config(endpoint, group, creds),
		rmq.WithAwaitDuration(5*time.Second),
		rmq.WithSubscriptionExpressions(map[string]*rmq.FilterExpression{
			topic: rmq.NewFilterExpression(tag),
		}))
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// receiveAll receives until every body of `want` came or a minute passed, acknowledging each;
// the counts of the bodies received.
func receiveAll(c rmq.SimpleConsumer, want []string) (map[string]int, error) {
	seen := map[string]int{}
	until := time.Now().Add(time.Minute)
	for time.Now().Before(until) && !covers(seen, want) {
		views, err := c.Receive(context.Background(), 16, 30*time.Second)
		if err != nil && !isNotFound(err) {
			return seen, err
		}
		for _, v := range views {
			seen[string(v.GetBody())]++
			if err := c.Ack(context.Background(), v); err != nil {
				return seen, fmt.Errorf("ack: %w", err)
			}
		}
	}
	return seen, nil
}

func covers(seen map[string]int, want []string) bool {
	for _, w := range want {
		if seen[w] == 0 {
			return false
		}
	}
	return true
}

// isNotFound is an empty receive (MESSAGE_NOT_FOUND), which the client reports as an error.
func isNotFound(err error) bool {
	return strings.Contains(err.Error(), "MESSAGE_NOT_FOUND") || strings.Contains(err.Error(), "40401")
}

func exactlyOnce(seen map[string]int, want []string) error {
	for _, w := range want {
		if seen[w] != 1 {
			return fmt.Errorf("%q received %d times; received %v", w, seen[w], keys(seen))
		}
	}
	if len(seen) != len(want) {
		return fmt.Errorf("received %v, sent %v", keys(seen), want)
	}
	return nil
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func main() {
	if len(os.Args) > 4 && os.Args[1] == "acl" {
		withACL(os.Args[2], os.Args[3], os.Args[4])
	}
	endpoint := os.Args[1]
	none := &credentials.SessionCredentials{}
	ctx := context.Background()
	p, err := producer(config(endpoint, "", none), nil, "GoGrpcNormal", "GoGrpcSimple")
	if err != nil {
		check("producer: starts", func() error { return err })
		finish()
	}
	defer p.GracefulStop()
	check("producer: normal send", func() error {
		m := message("GoGrpcNormal", "normal from go", "TagA")
		m.SetKeys("key-1")
		m.AddProperty("color", "blue")
		r, err := p.Send(ctx, m)
		if err != nil {
			return err
		}
		if len(r) != 1 || r[0].MessageID == "" {
			return fmt.Errorf("receipts %v", r)
		}
		return nil
	})
	check("producer: FIFO send with a message group", func() error {
		for i := 0; i < 5; i++ {
			m := message("GoGrpcFifo", fmt.Sprintf("fifo %d", i), "")
			m.SetMessageGroup("order-7")
			if _, err := p.Send(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	check("producer: delayed send", func() error {
		m := message("GoGrpcDelay", "later", "")
		m.SetDelayTimestamp(time.Now().Add(time.Second))
		_, err := p.Send(ctx, m)
		return err
	})
	check("producer: transactions, committed delivered and rolled back not", func() error {
		commit := &rmq.TransactionChecker{Check: func(*rmq.MessageView) rmq.TransactionResolution {
			return rmq.COMMIT
		}}
		tp, err := producer(config(endpoint, "", none), commit, "GoGrpcTx")
		if err != nil {
			return err
		}
		defer tp.GracefulStop()
		for _, outcome := range []string{"commit", "rollback"} {
			t := tp.BeginTransaction()
			if _, err := tp.SendWithTransaction(ctx, message("GoGrpcTx", "tx "+outcome, outcome), t); err != nil {
				return err
			}
			if outcome == "commit" {
				err = t.Commit()
			} else {
				err = t.RollBack()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", outcome, err)
			}
		}
		c, err := consumer(endpoint, "GoGrpcTxGroup", "GoGrpcTx", "*", none)
		if err != nil {
			return err
		}
		defer c.GracefulStop()
		seen, err := receiveAll(c, []string{"tx commit"})
		if err != nil {
			return err
		}
		return exactlyOnce(seen, []string{"tx commit"})
	})
	check("simple consumer: receives and acks every message once", func() error {
		var want []string
		for i := 0; i < 10; i++ {
			body := fmt.Sprintf("simple %d", i)
			want = append(want, body)
			if _, err := p.Send(ctx, message("GoGrpcSimple", body, "TagS")); err != nil {
				return err
			}
		}
		c, err := consumer(endpoint, "GoGrpcSimpleGroup", "GoGrpcSimple", "TagS", none)
		if err != nil {
			return err
		}
		defer c.GracefulStop()
		seen, err := receiveAll(c, want)
		if err != nil {
			return err
		}
		return exactlyOnce(seen, want)
	})
	check("simple consumer: a message given back comes again with its attempt raised", func() error {
		if _, err := p.Send(ctx, message("GoGrpcNormal", "given back", "TagBack")); err != nil {
			return err
		}
		c, err := consumer(endpoint, "GoGrpcBackGroup", "GoGrpcNormal", "TagBack", none)
		if err != nil {
			return err
		}
		defer c.GracefulStop()
		first, err := receiveOne(c)
		if err != nil {
			return err
		}
		if err := c.ChangeInvisibleDuration(first, time.Second); err != nil {
			return fmt.Errorf("change invisible duration: %w", err)
		}
		again, err := receiveOne(c)
		if err != nil {
			return err
		}
		if string(again.GetBody()) != "given back" || again.GetDeliveryAttempt() != first.GetDeliveryAttempt()+1 {
			return fmt.Errorf("got %q at attempt %d after attempt %d", again.GetBody(), again.GetDeliveryAttempt(), first.GetDeliveryAttempt())
		}
		return c.Ack(ctx, again)
	})
	finish()
}

// receiveOne receives until one message came, or 30 s passed.
func receiveOne(c rmq.SimpleConsumer) (*rmq.MessageView, error) {
	until := time.Now().Add(30 * time.Second)
	for time.Now().Before(until) {
		views, err := c.Receive(context.Background(), 1, 30*time.Second)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		if len(views) > 0 {
			return views[0], nil
		}
	}
	return nil, fmt.Errorf("no message within 30 s")
}

// withACL: against a proxy that checks ACL, signed with the account a send is received and
// acknowledged; signed with a wrong secret key, a producer is refused.
func withACL(endpoint, ak, sk string) {
	creds := &credentials.SessionCredentials{AccessKey: ak, AccessSecret: sk}
	check("with ACL, a signed send received and acknowledged", func() error {
		p, err := producer(config(endpoint, "", creds), nil, "GoGrpcAcl")
		if err != nil {
			return err
		}
		body := fmt.Sprintf("signed %d", time.Now().UnixNano())
		_, err = p.Send(context.Background(), message("GoGrpcAcl", body, "acl"))
		p.GracefulStop()
		if err != nil {
			return err
		}
		c, err := consumer(endpoint, "GoGrpcAclGroup", "GoGrpcAcl", "acl", creds)
		if err != nil {
			return err
		}
		defer c.GracefulStop()
		seen, err := receiveAll(c, []string{body})
		if err != nil {
			return err
		}
		return exactlyOnce(seen, []string{body})
	})
	check("with ACL, a wrong secret key is refused as unauthorized", func() error {
		wrong := &credentials.SessionCredentials{AccessKey: ak, AccessSecret: sk + "-wrong"}
		p, err := producer(config(endpoint, "", wrong), nil, "GoGrpcAcl")
		if err == nil {
			_, err = p.Send(context.Background(), message("GoGrpcAcl", "unsigned", ""))
			p.GracefulStop()
		}
		if err == nil {
			return fmt.Errorf("the send with a wrong secret key went through")
		}
		if !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "40100") {
			return fmt.Errorf("not refused as unauthorized: %w", err)
		}
		return nil
	})
	finish()
}
