package interop;

import java.nio.charset.StandardCharsets;
import java.time.Duration;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.consumer.ConsumeResult;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.PushConsumer;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.Transaction;
import org.apache.rocketmq.client.apis.producer.TransactionResolution;

/**
 * RocketMQ 5's Java gRPC client (rocketmq-client-java) against our gRPC proxy: normal, FIFO
 * (message group) and delayed sends, then a SimpleConsumer that receives and acknowledges
 * every message once, and a PushConsumer whose listener sees every message once.
 *
 * <p>Usage: ClientGrpc ENDPOINT (host:port of the gRPC proxy), or ClientGrpc produce ENDPOINT TOPIC
 * N (the cross flow: bodies "cross message I", tag "cross"), or ClientGrpc tls ENDPOINT (a proxy
 * that enforces TLS: the client with its default, SSL on), or ClientGrpc acl ENDPOINT AK SK (a
 * proxy that checks ACL: the client signs with the account). Prints PASS or FAIL per scenario and
 * exits 1 on any failure. ClientGrpc via LABEL SUFFIX ENDPOINT runs the first flow through another
 * proxy, its topics and groups named with SUFFIX and its scenarios with LABEL.
 */
public final class ClientGrpc {
    private static int passed;
    private static int failed;
    /** Before each scenario's name (the "via" mode). */
    private static String label = "";
    /** After each topic's and group's name (the "via" mode). */
    private static String suffix = "";

    /** A topic or group of this run. */
    private static String named(String name) {
        return name + suffix;
    }

    interface Check {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("tls")) {
            overTls(args[1]);
            return;
        }
        if (args[0].equals("acl")) {
            withAcl(args[1], args[2], args[3]);
            return;
        }
        if (args[0].equals("via")) {
            // Through another proxy, on topics and groups of their own: LABEL SUFFIX ENDPOINT.
            label = args[1] + ": ";
            suffix = args[2];
            args = new String[] {args[3]};
        }
        boolean cross = args[0].equals("produce");
        String endpoint = cross ? args[1] : args[0];
        ClientServiceProvider provider = ClientServiceProvider.loadService();
        ClientConfiguration config = ClientConfiguration.newBuilder()
            .setEndpoints(endpoint)
            .setRequestTimeout(Duration.ofSeconds(5))
            .enableSsl(false)
            .build();
        if (cross) {
            String topic = args[2];
            int n = Integer.parseInt(args[3]);
            check("produces " + n + " messages for another client", () -> {
                Producer p = provider.newProducerBuilder().setClientConfiguration(config).setTopics(topic).build();
                try {
                    for (int i = 0; i < n; i++) {
                        p.send(provider.newMessageBuilder().setTopic(topic).setTag("cross")
                            .setBody(("cross message " + i).getBytes(StandardCharsets.UTF_8)).build());
                    }
                } finally {
                    p.close();
                }
            });
            System.out.println("java-grpc: " + passed + " passed, " + failed + " failed");
            System.exit(failed == 0 ? 0 : 1);
        }
        Producer producer = provider.newProducerBuilder()
            .setClientConfiguration(config)
            .setTopics(named("GrpcNormal"), named("GrpcSimple"))
            .build();
        check("producer: normal send", () -> {
            Message m = provider.newMessageBuilder()
                .setTopic(named("GrpcNormal"))
                .setTag("TagA")
                .setKeys("key-1")
                .addProperty("color", "blue")
                .setBody("normal over grpc".getBytes(StandardCharsets.UTF_8))
                .build();
            SendReceipt r = producer.send(m);
            require(r.getMessageId() != null, "no message id");
        });
        check("producer: FIFO send with a message group", () -> {
            for (int i = 0; i < 5; i++) {
                Message m = provider.newMessageBuilder()
                    .setTopic(named("GrpcFifo"))
                    .setMessageGroup("order-42")
                    .setBody(("fifo " + i).getBytes(StandardCharsets.UTF_8))
                    .build();
                producer.send(m);
            }
        });
        check("producer: delayed send", () -> {
            Message m = provider.newMessageBuilder()
                .setTopic(named("GrpcDelay"))
                .setDeliveryTimestamp(System.currentTimeMillis() + 1_000)
                .setBody("later".getBytes(StandardCharsets.UTF_8))
                .build();
            producer.send(m);
        });
        check("producer: transactions, committed delivered and rolled back not", () -> {
            String topic = named("GrpcTx");
            Producer tx = provider.newProducerBuilder()
                .setClientConfiguration(config)
                .setTopics(topic)
                .setTransactionChecker(view -> TransactionResolution.COMMIT)
                .build();
            try {
                for (String outcome : new String[] {"commit", "rollback"}) {
                    Transaction t = tx.beginTransaction();
                    tx.send(provider.newMessageBuilder().setTopic(topic).setTag(outcome)
                        .setBody(("tx " + outcome).getBytes(StandardCharsets.UTF_8)).build(), t);
                    if (outcome.equals("commit")) {
                        t.commit();
                    } else {
                        t.rollback();
                    }
                }
            } finally {
                tx.close();
            }
            SimpleConsumer consumer = simpleConsumer(provider, config, named("GrpcTxGroup"), topic, FilterExpression.SUB_ALL);
            java.util.List<String> got = new java.util.ArrayList<>();
            try {
                long until = System.currentTimeMillis() + 30_000;
                while (got.isEmpty() && System.currentTimeMillis() < until) {
                    for (MessageView m : consumer.receive(16, Duration.ofSeconds(30))) {
                        got.add(StandardCharsets.UTF_8.decode(m.getBody()).toString());
                        consumer.ack(m);
                    }
                }
                // A rolled back message would have come with the committed one.
                for (MessageView m : consumer.receive(16, Duration.ofSeconds(30))) {
                    got.add(StandardCharsets.UTF_8.decode(m.getBody()).toString());
                    consumer.ack(m);
                }
            } finally {
                consumer.close();
            }
            require(got.equals(java.util.Collections.singletonList("tx commit")), "received " + got);
        });
        check("simple consumer: receives and acks every message once", () -> {
            String topic = named("GrpcSimple");
            int n = 10;
            java.util.Set<String> sent = new java.util.HashSet<>();
            for (int i = 0; i < n; i++) {
                String body = "simple " + i;
                producer.send(provider.newMessageBuilder().setTopic(topic).setTag("TagS")
                    .setBody(body.getBytes(StandardCharsets.UTF_8)).build());
                sent.add(body);
            }
            java.util.Map<String, Integer> seen = receiveCounts(
                simpleConsumer(provider, config, named("GrpcSimpleGroup"), topic, new FilterExpression("TagS")),
                counts -> counts.size() >= n, 60_000);
            require(seen.keySet().equals(sent), "received " + seen.keySet());
            require(seen.values().stream().allMatch(c -> c == 1), "received twice: " + seen);
        });
        check("push consumer: its listener gets every message once", () -> {
            String topic = named("GrpcPush");
            int n = 10;
            java.util.Set<String> sent = new java.util.HashSet<>();
            for (int i = 0; i < n; i++) {
                String body = "push " + i;
                producer.send(provider.newMessageBuilder().setTopic(topic).setTag("TagP")
                    .setBody(body.getBytes(StandardCharsets.UTF_8)).build());
                sent.add(body);
            }
            java.util.concurrent.ConcurrentHashMap<String, Integer> seen = new java.util.concurrent.ConcurrentHashMap<>();
            java.util.concurrent.CountDownLatch all = new java.util.concurrent.CountDownLatch(n);
            PushConsumer consumer = provider.newPushConsumerBuilder()
                .setClientConfiguration(config)
                .setConsumerGroup(named("GrpcPushGroup"))
                .setSubscriptionExpressions(java.util.Collections.singletonMap(topic, new FilterExpression("TagP")))
                .setMessageListener(m -> {
                    String body = StandardCharsets.UTF_8.decode(m.getBody()).toString();
                    if (seen.merge(body, 1, Integer::sum) == 1) {
                        all.countDown();
                    }
                    return ConsumeResult.SUCCESS;
                })
                .build();
            try {
                all.await(60, java.util.concurrent.TimeUnit.SECONDS);
            } finally {
                consumer.close();
            }
            require(seen.keySet().equals(sent), "received " + seen.keySet());
            require(seen.values().stream().allMatch(c -> c == 1), "received twice: " + seen);
        });
        check("push consumer of a FIFO group: a message group in order, one message at a time", () -> {
            // GrpcFifoGroup consumes in order (the harness made its config on every broker):
            // the proxy holds a queue's next messages back until the ones before are
            // acknowledged, and the client consumes a message group one message at a time.
            String topic = named("GrpcFifoOrder");
            int n = 10;
            java.util.List<String> sent = new java.util.ArrayList<>();
            java.util.function.IntConsumer send = i -> {
                String body = "step " + i;
                try {
                    producer.send(provider.newMessageBuilder().setTopic(topic).setMessageGroup("order-7")
                        .setBody(body.getBytes(StandardCharsets.UTF_8)).build());
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
                sent.add(body);
            };
            for (int i = 0; i < n / 2; i++) {
                send.accept(i);
            }
            java.util.List<String> got = java.util.Collections.synchronizedList(new java.util.ArrayList<>());
            java.util.concurrent.atomic.AtomicInteger busy = new java.util.concurrent.atomic.AtomicInteger();
            java.util.concurrent.atomic.AtomicInteger overlaps = new java.util.concurrent.atomic.AtomicInteger();
            java.util.concurrent.CountDownLatch all = new java.util.concurrent.CountDownLatch(n);
            PushConsumer consumer = provider.newPushConsumerBuilder()
                .setClientConfiguration(config)
                .setConsumerGroup(named("GrpcFifoGroup"))
                .setSubscriptionExpressions(java.util.Collections.singletonMap(topic, FilterExpression.SUB_ALL))
                .setMessageListener(m -> {
                    if (busy.incrementAndGet() > 1) {
                        overlaps.incrementAndGet();
                    }
                    try {
                        // Slow enough that the second half is sent while the first is consumed.
                        Thread.sleep(50);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    got.add(StandardCharsets.UTF_8.decode(m.getBody()).toString());
                    busy.decrementAndGet();
                    all.countDown();
                    return ConsumeResult.SUCCESS;
                })
                .build();
            try {
                for (int i = n / 2; i < n; i++) {
                    send.accept(i);
                }
                all.await(60, java.util.concurrent.TimeUnit.SECONDS);
            } finally {
                consumer.close();
            }
            require(got.equals(sent), "consumed in the order " + got + ", sent " + sent);
            require(overlaps.get() == 0, overlaps.get() + " messages of the group were consumed at once");
        });
        producer.close();
        System.out.println("java-grpc: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    private static void require(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    /**
     * The client as configured by default (SSL on) against a proxy that enforces TLS: a producer
     * sends, a SimpleConsumer receives the message and acknowledges it.
     */
    private static void overTls(String endpoint) {
        ClientServiceProvider provider = ClientServiceProvider.loadService();
        ClientConfiguration config = ClientConfiguration.newBuilder()
            .setEndpoints(endpoint)
            .setRequestTimeout(Duration.ofSeconds(5))
            .build();
        check("over TLS (the client's default), a send received and acknowledged",
            () -> sendAndReceive(provider, config, "GrpcTls", "GrpcTlsGroup", "tls"));
        System.out.println("java-grpc: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    /**
     * Against a proxy that checks ACL: signed with the account (the client's
     * SessionCredentialsProvider), a producer sends and a SimpleConsumer receives the message and
     * acknowledges it; signed with a wrong secret key, a producer is refused as unauthorized.
     */
    private static void withAcl(String endpoint, String accessKey, String secretKey) {
        ClientServiceProvider provider = ClientServiceProvider.loadService();
        java.util.function.Function<String, ClientConfiguration> signedWith = secret -> ClientConfiguration.newBuilder()
            .setEndpoints(endpoint)
            .setRequestTimeout(Duration.ofSeconds(5))
            .enableSsl(false)
            .setCredentialProvider(new org.apache.rocketmq.client.apis.StaticSessionCredentialsProvider(accessKey, secret))
            .build();
        ClientConfiguration config = signedWith.apply(secretKey);
        check("with ACL, a signed send received and acknowledged",
            () -> sendAndReceive(provider, config, "GrpcAcl", "GrpcAclGroup", "acl"));
        check("with ACL, a wrong secret key is refused as unauthorized", () -> {
            ClientConfiguration wrong = signedWith.apply(secretKey + "-wrong");
            Throwable refusal = null;
            try {
                Producer p = provider.newProducerBuilder().setClientConfiguration(wrong).setTopics("GrpcAcl").build();
                try {
                    p.send(provider.newMessageBuilder().setTopic("GrpcAcl")
                        .setBody("unsigned".getBytes(StandardCharsets.UTF_8)).build());
                } finally {
                    p.close();
                }
            } catch (Throwable e) {
                refusal = e;
            }
            boolean unauthorized = false;
            for (Throwable t = refusal; t != null; t = t.getCause()) {
                unauthorized |= t instanceof org.apache.rocketmq.client.java.exception.UnauthorizedException;
            }
            require(unauthorized, "not refused as unauthorized: " + refusal);
        });
        System.out.println("java-grpc: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    /**
     * Sends a message tagged `tag` to `topic`, then receives it (and acknowledges everything) in
     * `group` with a SimpleConsumer of that tag; fails unless it came within 30 s.
     */
    private static void sendAndReceive(ClientServiceProvider provider, ClientConfiguration config,
            String topic, String group, String tag) throws Exception {
        String body = tag + " " + System.nanoTime();
        Producer p = provider.newProducerBuilder().setClientConfiguration(config).setTopics(topic).build();
        try {
            p.send(provider.newMessageBuilder().setTopic(topic).setTag(tag)
                .setBody(body.getBytes(StandardCharsets.UTF_8)).build());
        } finally {
            p.close();
        }
        java.util.Map<String, Integer> seen = receiveCounts(
            simpleConsumer(provider, config, group, topic, new FilterExpression(tag)),
            counts -> counts.containsKey(body), 30_000);
        require(seen.containsKey(body), "the message sent to " + topic + " was not received in 30 s: " + seen);
    }

    /** A SimpleConsumer of `group` on `topic` with `filter`, waiting up to 5 s per receive. */
    private static SimpleConsumer simpleConsumer(ClientServiceProvider provider, ClientConfiguration config,
            String group, String topic, FilterExpression filter) throws Exception {
        return provider.newSimpleConsumerBuilder()
            .setClientConfiguration(config)
            .setConsumerGroup(group)
            .setAwaitDuration(Duration.ofSeconds(5))
            .setSubscriptionExpressions(java.util.Collections.singletonMap(topic, filter))
            .build();
    }

    /**
     * Receives with `consumer`, acknowledging everything, until `done` holds for the bodies
     * counted so far or `millis` pass; closes the consumer and returns the counts.
     */
    private static java.util.Map<String, Integer> receiveCounts(SimpleConsumer consumer,
            java.util.function.Predicate<java.util.Map<String, Integer>> done, long millis) throws Exception {
        java.util.Map<String, Integer> seen = new java.util.HashMap<>();
        try {
            long until = System.currentTimeMillis() + millis;
            while (!done.test(seen) && System.currentTimeMillis() < until) {
                for (MessageView m : consumer.receive(16, Duration.ofSeconds(30))) {
                    seen.merge(StandardCharsets.UTF_8.decode(m.getBody()).toString(), 1, Integer::sum);
                    consumer.ack(m);
                }
            }
        } finally {
            consumer.close();
        }
        return seen;
    }

    private static void check(String name, Check c) {
        try {
            c.run();
            passed++;
            System.out.println("PASS " + label + name);
        } catch (Throwable e) {
            failed++;
            System.out.println("FAIL " + label + name + "\t" + e);
            e.printStackTrace(System.out);
        }
    }

    private ClientGrpc() {
    }
}
