package interop;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.rocketmq.client.consumer.DefaultMQPullConsumer;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.PullResult;
import org.apache.rocketmq.client.consumer.PullStatus;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.exception.MQClientException;
import org.apache.rocketmq.client.hook.SendMessageContext;
import org.apache.rocketmq.client.hook.SendMessageHook;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * The scenarios of Apache RocketMQ 4.5.1's DefaultMQProducerTest, against a real `mq serve`
 * instead of mocks: each send is checked by pulling back what the broker stored. Then a push
 * consumer reads what was sent.
 *
 * Usage: Client451 NAMESRV NAMESRV_WITHOUT_AUTO_CREATE
 */
public final class Client451 {
    private static final String TOPIC = "Interop451";
    private static int passed;
    private static int failed;
    private static final List<MessageExt> sent = new ArrayList<>();

    interface Check {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        String namesrv = args[0];
        String noAutoCreate = args[1];
        DefaultMQProducer producer = producer("p451", "main", namesrv);
        DefaultMQPullConsumer puller = new DefaultMQPullConsumer("pull451");
        puller.setNamesrvAddr(namesrv);
        puller.setInstanceName("pull");
        puller.start();

        check("zero-length body is refused before any I/O", () -> {
            MQClientException e = expectClientException(() -> producer.send(new Message(TOPIC, new byte[0])));
            require(e.getMessage().contains("message body length is zero"), e.getMessage());
        });
        check("no name server address", () -> {
            DefaultMQProducer lonely = new DefaultMQProducer("p451_lonely");
            lonely.setInstanceName("lonely");
            lonely.start();
            try {
                MQClientException e = expectClientException(() -> lonely.send(message("x", 10)));
                require(e.getMessage().contains("No name server address"), e.getMessage());
            } finally {
                lonely.shutdown();
            }
        });
        check("no route, a name server without the topic nor TBW102", () -> {
            DefaultMQProducer p = producer("p451_noroute", "noroute", noAutoCreate);
            try {
                MQClientException e = expectClientException(() -> p.send(message("x", 10)));
                require(e.getMessage().contains("No route info of this topic"), e.getMessage());
            } finally {
                p.shutdown();
            }
        });
        check("sync send", () -> verifyStored(puller, producer.send(message("sync", 100)), "sync", 100));
        check("sync send, compressed body", () ->
            verifyStored(puller, producer.send(message("sync-compressed", 5000)), "sync-compressed", 5000));
        check("async send", () -> verifyStored(puller, sendAsync(producer, message("async", 100)), "async", 100));
        check("async send, compressed body", () ->
            verifyStored(puller, sendAsync(producer, message("async-compressed", 5000)), "async-compressed", 5000));
        check("send hook sees before and after", () -> {
            AtomicInteger before = new AtomicInteger();
            AtomicReference<SendResult> after = new AtomicReference<>();
            producer.getDefaultMQProducerImpl().registerSendMessageHook(new SendMessageHook() {
                @Override
                public String hookName() {
                    return "interop";
                }

                @Override
                public void sendMessageBefore(SendMessageContext ctx) {
                    before.incrementAndGet();
                }

                @Override
                public void sendMessageAfter(SendMessageContext ctx) {
                    after.set(ctx.getSendResult());
                }
            });
            SendResult r = producer.send(message("hooked", 100));
            verifyStored(puller, r, "hooked", 100);
            require(before.get() == 1, "before ran " + before.get() + " times");
            require(after.get() != null && after.get().getSendStatus() == SendStatus.SEND_OK, "after saw " + after.get());
        });
        check("push consumer receives every message sent, once", () -> {
            Set<String> want = ConcurrentHashMap.newKeySet();
            for (MessageExt m : sent) {
                want.add(m.getMsgId());
            }
            Set<String> seen = ConcurrentHashMap.newKeySet();
            AtomicInteger duplicates = new AtomicInteger();
            CountDownLatch all = new CountDownLatch(want.size());
            DefaultMQPushConsumer consumer = new DefaultMQPushConsumer("push451");
            consumer.setNamesrvAddr(namesrv);
            consumer.setInstanceName("push");
            consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
            consumer.subscribe(TOPIC, "*");
            consumer.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
                for (MessageExt m : msgs) {
                    if (!seen.add(m.getMsgId())) {
                        duplicates.incrementAndGet();
                    } else if (want.contains(m.getMsgId())) {
                        all.countDown();
                    }
                }
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
            });
            consumer.start();
            try {
                require(all.await(60, TimeUnit.SECONDS), "received " + seen.size() + " of " + want.size());
                require(duplicates.get() == 0, duplicates.get() + " duplicates");
            } finally {
                consumer.shutdown();
            }
        });
        producer.shutdown();
        puller.shutdown();
        System.out.println("java-4.5.1: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    private static DefaultMQProducer producer(String group, String instance, String namesrv) throws MQClientException {
        DefaultMQProducer p = new DefaultMQProducer(group);
        p.setNamesrvAddr(namesrv);
        p.setInstanceName(instance);
        p.start();
        return p;
    }

    private static Message message(String tag, int size) {
        byte[] body = new byte[size];
        for (int i = 0; i < size; i++) {
            body[i] = (byte) ('a' + i % 26);
        }
        Message m = new Message(TOPIC, tag, "key-" + tag, body);
        m.putUserProperty("scenario", tag);
        return m;
    }

    private static SendResult sendAsync(DefaultMQProducer producer, Message m) throws Exception {
        CountDownLatch done = new CountDownLatch(1);
        AtomicReference<SendResult> result = new AtomicReference<>();
        AtomicReference<Throwable> error = new AtomicReference<>();
        producer.send(m, new SendCallback() {
            @Override
            public void onSuccess(SendResult r) {
                result.set(r);
                done.countDown();
            }

            @Override
            public void onException(Throwable e) {
                error.set(e);
                done.countDown();
            }
        });
        require(done.await(10, TimeUnit.SECONDS), "no callback within 10 s");
        if (error.get() != null) {
            throw new AssertionError("callback failed: " + error.get());
        }
        return result.get();
    }

    /** Pulls the stored message the result points at and compares it with what was sent. */
    private static void verifyStored(DefaultMQPullConsumer puller, SendResult r, String tag, int size) throws Exception {
        require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
        // A Java broker makes a stored message pullable a moment later (its consume queues are
        // built by a dispatcher thread): wait for it, boundedly.
        PullResult pulled = puller.pull(r.getMessageQueue(), "*", r.getQueueOffset(), 1);
        long until = System.currentTimeMillis() + 10_000;
        while (pulled.getPullStatus() == PullStatus.NO_NEW_MSG && System.currentTimeMillis() < until) {
            Thread.sleep(20);
            pulled = puller.pull(r.getMessageQueue(), "*", r.getQueueOffset(), 1);
        }
        require(pulled.getPullStatus() == PullStatus.FOUND, "pull status " + pulled.getPullStatus());
        MessageExt m = pulled.getMsgFoundList().get(0);
        require(m.getMsgId().equals(r.getMsgId()), "msgId " + m.getMsgId() + " != " + r.getMsgId());
        require(Arrays.equals(m.getBody(), message(tag, size).getBody()), "body differs (" + m.getBody().length + " bytes)");
        require(tag.equals(m.getTags()), "tags " + m.getTags());
        require(("key-" + tag).equals(m.getKeys()), "keys " + m.getKeys());
        require(tag.equals(m.getUserProperty("scenario")), "property " + m.getUserProperty("scenario"));
        sent.add(m);
    }

    private static MQClientException expectClientException(Check send) throws Exception {
        try {
            send.run();
        } catch (MQClientException e) {
            return e;
        }
        throw new AssertionError("the send succeeded");
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

    private Client451() {
    }
}
