package interop;

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
 * Usage: Client53 NAMESRV
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
        check("push consumer reads every message once", () -> consumeAll(namesrv, false));
        check("lite pull consumer reads every message once", () -> consumeAll(namesrv, true));
        producer.shutdown();
        System.out.println("java-5.3: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
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
        List<String> wrong = new ArrayList<>();
        CountDownLatch all = new CountDownLatch(sent.size());
        MessageListenerConcurrently listener = (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                Message want = sent.get(m.getMsgId());
                if (want == null) {
                    continue;
                }
                if (!Arrays.equals(want.getBody(), m.getBody()) || !want.getTags().equals(m.getTags())
                        || !want.getKeys().equals(m.getKeys())
                        || !want.getUserProperty("scenario").equals(m.getUserProperty("scenario"))) {
                    synchronized (wrong) {
                        wrong.add(m.getMsgId() + " (" + m.getTags() + ", " + m.getBody().length + " bytes)");
                    }
                }
                if (seen.computeIfAbsent(m.getMsgId(), k -> new AtomicInteger()).incrementAndGet() == 1) {
                    all.countDown();
                }
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
        require(all.getCount() == 0, "read " + seen.size() + " of " + sent.size());
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
