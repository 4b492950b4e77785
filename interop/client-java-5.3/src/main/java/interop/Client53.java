package interop;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.compression.CompressionType;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * The Apache RocketMQ 5.3 remoting client against a real `mq serve`: every send mode, bodies
 * compressed with each codec, then a push consumer and a lite pull consumer must each read
 * every message back once, with body, tags, keys and properties intact.
 *
 * Usage: Client53 NAMESRV, or Client53 produce NAMESRV TOPIC N, or Client53 consume NAMESRV TOPIC
 * N GROUP (the cross-client flows: bodies "cross message I", tag "cross"), or Client53 bench
 * NAMESRV TOPIC sync|async THREADS WINDOW SIZE SECONDS (the Java side of the side-by-side
 * performance row, in the spirit of rocketmq-example's benchmark Producer, which Maven Central
 * does not carry).
 */
public final class Client53 {
    private static final String TOPIC = "Interop53";
    private static int passed;
    private static int failed;
    /** What the broker acknowledged: message id to the message sent. */
    private static final Map<String, Message> sent = new ConcurrentHashMap<>();

    interface Check {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("bench")) {
            bench(args);
            return;
        }
        if (args[0].equals("produce") || args[0].equals("consume")) {
            cross(args);
            return;
        }
        String namesrv = args[0];
        DefaultMQProducer producer = new DefaultMQProducer("p53");
        producer.setNamesrvAddr(namesrv);
        producer.setInstanceName("p53");
        producer.start();

        check("sync send", () -> acked(producer.send(message("sync", 0, 100)), "sync", 0, 100));
        check("async send", () -> {
            CountDownLatch done = new CountDownLatch(1);
            AtomicReference<Object> outcome = new AtomicReference<>();
            producer.send(message("async", 0, 100), new SendCallback() {
                @Override
                public void onSuccess(SendResult r) {
                    outcome.set(r);
                    done.countDown();
                }

                @Override
                public void onException(Throwable e) {
                    outcome.set(e);
                    done.countDown();
                }
            });
            require(done.await(10, TimeUnit.SECONDS), "no callback within 10 s");
            require(outcome.get() instanceof SendResult, "callback got " + outcome.get());
            acked((SendResult) outcome.get(), "async", 0, 100);
        });
        check("batch of 10", () -> {
            List<Message> batch = new ArrayList<>();
            for (int i = 0; i < 10; i++) {
                batch.add(message("batch", i, 100));
            }
            SendResult r = producer.send(batch);
            require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
            String[] ids = r.getMsgId().split(",");
            require(ids.length == 10, "ids " + r.getMsgId());
            for (int i = 0; i < 10; i++) {
                sent.put(ids[i], batch.get(i));
            }
        });
        for (CompressionType type : CompressionType.values()) {
            check("sync send, " + type + " body", () -> {
                producer.setCompressType(type);
                String tag = "compressed-" + type;
                acked(producer.send(message(tag, 0, 6000)), tag, 0, 6000);
            });
        }
        producer.setCompressType(CompressionType.ZLIB);
        check("oneway send", () -> {
            Message m = message("oneway", 0, 100);
            producer.sendOneway(m);
            // Oneway has no result: the consumers look for it by its unique key.
            sent.put(org.apache.rocketmq.common.message.MessageClientIDSetter.getUniqID(m), m);
        });
        check("timer message comes at its time, a recalled one never", () -> timers(namesrv, producer));
        check("push consumer reads every message once", () -> consumeAll(namesrv, false));
        check("lite pull consumer reads every message once", () -> consumeAll(namesrv, true));
        producer.shutdown();
        System.out.println("java-5.3: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    /**
     * Sends SIZE-byte messages from THREADS threads for SECONDS after a warm-up of the same
     * length (JIT), sync or with WINDOW async sends in flight per thread; prints
     * `bench msgs=N seconds=S cpu_ns=C` for the timed part (C: the JVM's CPU time).
     */
    private static void bench(String[] args) throws Exception {
        String namesrv = args[1];
        String topic = args[2];
        boolean async = args[3].equals("async");
        int threads = Integer.parseInt(args[4]);
        int window = Integer.parseInt(args[5]);
        byte[] body = new byte[Integer.parseInt(args[6])];
        long seconds = Long.parseLong(args[7]);
        DefaultMQProducer p = new DefaultMQProducer("bench53");
        p.setNamesrvAddr(namesrv);
        p.setInstanceName("bench53");
        p.start();
        p.send(new Message(topic, body));
        java.lang.management.OperatingSystemMXBean os = java.lang.management.ManagementFactory.getOperatingSystemMXBean();
        com.sun.management.OperatingSystemMXBean cpu = (com.sun.management.OperatingSystemMXBean) os;
        java.util.concurrent.atomic.AtomicLong counted = new java.util.concurrent.atomic.AtomicLong();
        java.util.concurrent.atomic.AtomicBoolean measuring = new java.util.concurrent.atomic.AtomicBoolean();
        java.util.concurrent.atomic.AtomicLong errors = new java.util.concurrent.atomic.AtomicLong();
        long warmEnd = System.nanoTime() + seconds * 1_000_000_000L;
        long end = warmEnd + seconds * 1_000_000_000L;
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            Thread w = new Thread(() -> {
                java.util.concurrent.Semaphore room = new java.util.concurrent.Semaphore(window);
                while (System.nanoTime() < end) {
                    try {
                        if (async) {
                            room.acquire();
                            p.send(new Message(topic, body), new SendCallback() {
                                @Override
                                public void onSuccess(SendResult r) {
                                    if (measuring.get()) {
                                        counted.incrementAndGet();
                                    }
                                    room.release();
                                }

                                @Override
                                public void onException(Throwable e) {
                                    errors.incrementAndGet();
                                    room.release();
                                }
                            });
                        } else {
                            p.send(new Message(topic, body));
                            if (measuring.get()) {
                                counted.incrementAndGet();
                            }
                        }
                    } catch (Exception e) {
                        errors.incrementAndGet();
                    }
                }
                room.acquireUninterruptibly(window);
            });
            w.start();
            workers.add(w);
        }
        Thread.sleep(Math.max(0, (warmEnd - System.nanoTime()) / 1_000_000));
        long cpuStart = cpu.getProcessCpuTime();
        long wallStart = System.nanoTime();
        measuring.set(true);
        Thread.sleep(Math.max(0, (end - System.nanoTime()) / 1_000_000));
        measuring.set(false);
        long wall = System.nanoTime() - wallStart;
        long cpuUsed = cpu.getProcessCpuTime() - cpuStart;
        long msgs = counted.get();
        for (Thread w : workers) {
            w.join();
        }
        p.shutdown();
        System.out.println("bench msgs=" + msgs + " seconds=" + (wall / 1e9) + " cpu_ns=" + cpuUsed + " errors=" + errors.get());
        System.exit(0);
    }

    /** The cross-client flows: produce N messages, or consume N messages another client sent. */
    private static void cross(String[] args) throws Exception {
        String namesrv = args[1];
        String topic = args[2];
        int n = Integer.parseInt(args[3]);
        if (args[0].equals("produce")) {
            check("produces " + n + " messages for another client", () -> {
                DefaultMQProducer p = new DefaultMQProducer("cross53");
                p.setNamesrvAddr(namesrv);
                p.setInstanceName("cross53");
                p.start();
                try {
                    for (int i = 0; i < n; i++) {
                        Message m = new Message(topic, "cross", ("cross message " + i).getBytes("UTF-8"));
                        SendResult r = p.send(m);
                        require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
                    }
                } finally {
                    p.shutdown();
                }
            });
        } else {
            check("consumes the " + n + " messages another client produced", () -> {
                Map<String, AtomicInteger> bodies = new ConcurrentHashMap<>();
                CountDownLatch all = new CountDownLatch(n);
                DefaultMQPushConsumer c = new DefaultMQPushConsumer(args[4]);
                c.setNamesrvAddr(namesrv);
                c.setInstanceName(args[4]);
                c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
                c.subscribe(topic, "*");
                c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
                    for (MessageExt m : msgs) {
                        String body = new String(m.getBody(), java.nio.charset.StandardCharsets.UTF_8);
                        if (bodies.computeIfAbsent(body, k -> new AtomicInteger()).incrementAndGet() == 1
                                && body.startsWith("cross message ") && "cross".equals(m.getTags())) {
                            all.countDown();
                        }
                    }
                    return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
                });
                c.start();
                try {
                    all.await(60, TimeUnit.SECONDS);
                } finally {
                    c.shutdown();
                }
                for (int i = 0; i < n; i++) {
                    require(bodies.containsKey("cross message " + i), "missing cross message " + i + " (got " + bodies.size() + ")");
                }
            });
        }
        System.out.println("java-5.3: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    /**
     * Timer messages (5.x): one due in 3 s (setDeliverTimeMs), one due then too but recalled
     * with the handle its send answered with, and one due in 5 s (setDelayTimeSec) after which
     * the others would have come. A push consumer must read the first (not more than a second
     * early: brokers keep times to the second) and the last, and never the recalled one.
     */
    private static void timers(String namesrv, DefaultMQProducer producer) throws Exception {
        String topic = "Interop53Timer";
        long due = System.currentTimeMillis() + 3_000;
        Message onTime = new Message(topic, "timer", "on-time".getBytes(StandardCharsets.UTF_8));
        onTime.setDeliverTimeMs(due);
        SendResult r = producer.send(onTime);
        require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
        Message recalled = new Message(topic, "timer", "recalled".getBytes(StandardCharsets.UTF_8));
        recalled.setDeliverTimeMs(due);
        SendResult rr = producer.send(recalled);
        require(rr.getRecallHandle() != null && !rr.getRecallHandle().isEmpty(),
            "no recall handle in the send result");
        String id = producer.recallMessage(topic, rr.getRecallHandle());
        require(rr.getMsgId().equals(id), "recall answered " + id + " for " + rr.getMsgId());
        Message last = new Message(topic, "timer", "last".getBytes(StandardCharsets.UTF_8));
        last.setDelayTimeSec(5);
        producer.send(last);

        Map<String, Long> arrived = new ConcurrentHashMap<>();
        CountDownLatch lastCame = new CountDownLatch(1);
        DefaultMQPushConsumer c = new DefaultMQPushConsumer("timer53");
        c.setNamesrvAddr(namesrv);
        c.setInstanceName("timer53");
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.subscribe(topic, "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                String body = new String(m.getBody(), StandardCharsets.UTF_8);
                arrived.putIfAbsent(body, System.currentTimeMillis());
                if (body.equals("last")) {
                    lastCame.countDown();
                }
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            require(lastCame.await(30, TimeUnit.SECONDS), "the last timer message did not come; read " + arrived.keySet());
        } finally {
            c.shutdown();
        }
        require(!arrived.containsKey("recalled"), "the recalled message came");
        Long at = arrived.get("on-time");
        require(at != null, "the first timer message did not come; read " + arrived.keySet());
        require(at >= due - 1_000, "came " + (due - at) + " ms before its time");
    }

    private static Message message(String tag, int i, int size) {
        byte[] body = new byte[size];
        for (int b = 0; b < size; b++) {
            body[b] = (byte) ('a' + (b + i) % 26);
        }
        Message m = new Message(TOPIC, tag, "key-" + tag + "-" + i, body);
        m.putUserProperty("scenario", tag);
        return m;
    }

    private static void acked(SendResult r, String tag, int i, int size) {
        require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
        sent.put(r.getMsgId(), message(tag, i, size));
    }

    private static void consumeAll(String namesrv, boolean lite) throws Exception {
        Map<String, AtomicInteger> seen = new ConcurrentHashMap<>();
        Map<String, String> unknown = new ConcurrentHashMap<>();
        List<String> wrong = new ArrayList<>();
        // Every message sent has its own tag and key: the wait ends when each has arrived,
        // whatever id it arrives with; the ids are checked after.
        java.util.Set<String> expected = ConcurrentHashMap.newKeySet();
        for (Message m : sent.values()) {
            expected.add(m.getTags() + "/" + m.getKeys());
        }
        java.util.Set<String> arrived = ConcurrentHashMap.newKeySet();
        CountDownLatch all = new CountDownLatch(expected.size());
        MessageListenerConcurrently listener = (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                String tagKey = m.getTags() + "/" + m.getKeys();
                if (expected.contains(tagKey) && arrived.add(tagKey)) {
                    all.countDown();
                }
                Message want = sent.get(m.getMsgId());
                if (want == null) {
                    unknown.put(m.getMsgId(), m.getTags() + "/" + m.getKeys());
                    continue;
                }
                if (!Arrays.equals(want.getBody(), m.getBody()) || !want.getTags().equals(m.getTags())
                        || !want.getKeys().equals(m.getKeys())
                        || !want.getUserProperty("scenario").equals(m.getUserProperty("scenario"))) {
                    synchronized (wrong) {
                        wrong.add(m.getMsgId() + " (" + m.getTags() + ", " + m.getBody().length + " bytes)");
                    }
                }
                seen.computeIfAbsent(m.getMsgId(), k -> new AtomicInteger()).incrementAndGet();
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        };
        if (lite) {
            DefaultLitePullConsumer c = new DefaultLitePullConsumer("lite53");
            c.setNamesrvAddr(namesrv);
            c.setInstanceName("lite53");
            c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
            c.subscribe(TOPIC, "*");
            c.start();
            try {
                long until = System.currentTimeMillis() + 60_000;
                while (all.getCount() > 0 && System.currentTimeMillis() < until) {
                    listener.consumeMessage(c.poll(1000), null);
                }
            } finally {
                c.shutdown();
            }
        } else {
            DefaultMQPushConsumer c = new DefaultMQPushConsumer("push53");
            c.setNamesrvAddr(namesrv);
            c.setInstanceName("push53");
            c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
            c.subscribe(TOPIC, "*");
            c.registerMessageListener(listener);
            c.start();
            try {
                all.await(60, TimeUnit.SECONDS);
            } finally {
                c.shutdown();
            }
        }
        if (seen.size() != sent.size()) {
            List<String> missing = new ArrayList<>();
            for (Map.Entry<String, Message> e : sent.entrySet()) {
                if (!seen.containsKey(e.getKey())) {
                    missing.add(e.getKey() + " " + e.getValue().getTags() + "/" + e.getValue().getKeys());
                }
            }
            throw new AssertionError("read " + seen.size() + " of " + sent.size() + "; missing " + missing
                + "; read but not sent " + unknown);
        }
        require(wrong.isEmpty(), "differ from what was sent: " + wrong);
        long twice = seen.values().stream().filter(n -> n.get() > 1).count();
        require(twice == 0, twice + " read more than once");
    }

    private static void require(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private static void check(String name, Check c) {
        try {
            c.run();
            passed++;
            System.out.println("PASS " + name);
        } catch (Throwable e) {
            failed++;
            System.out.println("FAIL " + name + ": " + e);
            e.printStackTrace(System.out);
        }
    }

    private Client53() {
    }
}
