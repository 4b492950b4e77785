package interop;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;

import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.exception.RequestTimeoutException;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.client.utils.MessageUtil;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageConst;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * Request-reply with the Apache RocketMQ 4.9 Java client against any server: the requester's
 * sync {@code request()} answered by a Java consumer that replies with
 * {@code MessageUtil.createReplyMessage}, then a request nobody answers timing out.
 *
 * <p>4.9 because 4.5.1 predates request-reply (4.6), and 5.3's {@code request()} returns before
 * the reply (apache/rocketmq#9319); its callback form answers with no reply in both
 * (apache/rocketmq#6726), so only the sync form is checked.
 *
 * <p>With an ACL broker ({@code --acl NAMESRV ACCESS_KEY SECRET_KEY}), also: a producer signing
 * with {@code AclClientRPCHook} is served, an unsigned one refused. With a broker that enforces
 * TLS ({@code --tls NAMESRV}): a producer with {@code useTLS} is served (the client's test mode,
 * its default, trusts any certificate), a plain one refused.
 *
 * <p>Usage: Client49 NAMESRV [--acl NAMESRV ACCESS_KEY SECRET_KEY] [--tls NAMESRV]. Prints PASS
 * or FAIL per scenario and exits 1 on any failure.
 */
public final class Client49 {
    private static final String TOPIC = "Interop49Rpc";
    private static int passed;
    private static int failed;

    interface Check {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        String namesrv = args[0];
        DefaultMQProducer requester = new DefaultMQProducer("requester49");
        requester.setNamesrvAddr(namesrv);
        requester.setInstanceName("requester49");
        requester.start();
        check("sync requests each answered by a Java replier", () -> answered(namesrv, requester));
        check("a request nobody answers times out", () -> {
            long started = System.currentTimeMillis();
            try {
                requester.request(new Message(TOPIC + "Silent", "anyone?".getBytes(StandardCharsets.UTF_8)), 1_000);
                throw new AssertionError("a reply came from nowhere");
            } catch (RequestTimeoutException e) {
                long took = System.currentTimeMillis() - started;
                require(took >= 900, "gave up after " + took + " ms");
            }
        });
        requester.shutdown();
        String aclNamesrv = null;
        String accessKey = null;
        String secretKey = null;
        String tlsNamesrv = null;
        for (int i = 1; i < args.length; i++) {
            if (args[i].equals("--acl")) {
                aclNamesrv = args[++i];
                accessKey = args[++i];
                secretKey = args[++i];
            } else if (args[i].equals("--tls")) {
                tlsNamesrv = args[++i];
            }
        }
        if (aclNamesrv != null) {
            aclChecks(aclNamesrv, accessKey, secretKey);
        }
        if (tlsNamesrv != null) {
            tlsChecks(tlsNamesrv);
        }
        System.out.println("java-4.9: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    private static void tlsChecks(String namesrv) {
        check("TLS broker takes TLS sends", () -> {
            DefaultMQProducer p = new DefaultMQProducer("tls49");
            p.setNamesrvAddr(namesrv);
            p.setInstanceName("tls49");
            p.setUseTLS(true);
            p.start();
            try {
                SendResult r = p.send(new Message("TlsTopic49", "over tls".getBytes(StandardCharsets.UTF_8)));
                require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
            } finally {
                p.shutdown();
            }
        });
        check("TLS broker refuses plain sends", () -> {
            DefaultMQProducer p = new DefaultMQProducer("plain49");
            p.setNamesrvAddr(namesrv);
            p.setInstanceName("plain49");
            p.setRetryTimesWhenSendFailed(0);
            p.setSendMsgTimeout(3_000);
            p.start();
            try {
                p.send(new Message("TlsTopic49", "in clear".getBytes(StandardCharsets.UTF_8)));
                throw new AssertionError("a plain send was stored");
            } catch (Exception e) {
                // Refused: the name server closes the plain connection, so the route lookup
                // fails (how the client reports it varies: IllegalStateException, MQClientException).
            } finally {
                p.shutdown();
            }
        });
    }

    private static void aclChecks(String namesrv, String accessKey, String secretKey) {
        check("ACL broker takes signed sends", () -> {
            DefaultMQProducer p = new DefaultMQProducer("signed49",
                new AclClientRPCHook(new SessionCredentials(accessKey, secretKey)));
            p.setNamesrvAddr(namesrv);
            p.setInstanceName("signed49");
            p.start();
            try {
                SendResult r = p.send(new Message("AclTopic49", "signed".getBytes(StandardCharsets.UTF_8)));
                require(r.getSendStatus() == SendStatus.SEND_OK, "status " + r.getSendStatus());
            } finally {
                p.shutdown();
            }
        });
        check("ACL broker refuses unsigned sends", () -> {
            DefaultMQProducer p = new DefaultMQProducer("unsigned49");
            p.setNamesrvAddr(namesrv);
            p.setInstanceName("unsigned49");
            p.setRetryTimesWhenSendFailed(0);
            p.start();
            try {
                p.send(new Message("AclTopic49", "unsigned".getBytes(StandardCharsets.UTF_8)));
                throw new AssertionError("an unsigned send was stored");
            } catch (org.apache.rocketmq.client.exception.MQClientException
                    | org.apache.rocketmq.client.exception.MQBrokerException e) {
                // The broker's refusal, possibly wrapped by the retry loop, names the key.
                StringBuilder chain = new StringBuilder();
                for (Throwable t = e; t != null; t = t.getCause()) {
                    chain.append(t.getMessage()).append(" / ");
                }
                require(chain.toString().contains("accessKey"), "refused for " + chain);
            } finally {
                p.shutdown();
            }
        });
    }

    private static void answered(String namesrv, DefaultMQProducer requester) throws Exception {
        // The topic exists, and the name server knows it, before the replier looks its route up
        // (a consumer asks again only every 30 s).
        requester.send(new Message(TOPIC, "warm-up".getBytes(StandardCharsets.UTF_8)));
        long until = System.currentTimeMillis() + 20_000;
        while (true) {
            try {
                requester.fetchPublishMessageQueues(TOPIC);
                break;
            } catch (Exception e) {
                require(System.currentTimeMillis() < until, "no route for " + TOPIC + ": " + e);
                TimeUnit.MILLISECONDS.sleep(100);
            }
        }
        // The broker finds the requester by its heartbeat, which a Java client sends every 30 s
        // (and when a request names a topic it has no route for): heartbeat now, as the
        // warm-up taught it the route.
        requester.getDefaultMQProducerImpl().getmQClientFactory().sendHeartbeatToAllBrokerWithLock();
        DefaultMQProducer replies = new DefaultMQProducer("replier49");
        replies.setNamesrvAddr(namesrv);
        replies.setInstanceName("replier49");
        replies.start();
        DefaultMQPushConsumer c = new DefaultMQPushConsumer("replier49c");
        c.setNamesrvAddr(namesrv);
        c.setInstanceName("replier49c");
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.subscribe(TOPIC, "*");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                if (m.getProperty(MessageConst.PROPERTY_CORRELATION_ID) == null) {
                    continue;
                }
                try {
                    byte[] body = ("re:" + new String(m.getBody(), StandardCharsets.UTF_8)).getBytes(StandardCharsets.UTF_8);
                    replies.send(MessageUtil.createReplyMessage(m, body));
                } catch (Exception e) {
                    System.out.println("reply failed: " + e);
                    return ConsumeConcurrentlyStatus.RECONSUME_LATER;
                }
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        try {
            for (int i = 0; i < 10; i++) {
                Message reply = requester.request(new Message(TOPIC, ("q" + i).getBytes(StandardCharsets.UTF_8)), 30_000);
                String got = new String(reply.getBody(), StandardCharsets.UTF_8);
                require(got.equals("re:q" + i), "request q" + i + " got " + got);
                require(reply.getTopic().endsWith("_REPLY_TOPIC"), "reply topic " + reply.getTopic());
            }
        } finally {
            c.shutdown();
            replies.shutdown();
        }
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

    private Client49() {
    }
}
