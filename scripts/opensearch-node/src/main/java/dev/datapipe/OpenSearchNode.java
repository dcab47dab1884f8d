package dev.datapipe;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Runs one real OpenSearch node inside this JVM: HTTP on 127.0.0.1, single-node discovery,
 * no security plugin, all state under the directory given as the only argument.
 *
 *   java [-Dopensearch.http.port=9201] [-Dopensearch.transport.port=9301] -jar opensearch-node.jar HOME_DIR
 *
 * Modules are plugin classes on the classpath (from Maven Central): transport-netty4 (HTTP +
 * transport), lang-painless (scripts) and analysis-common (asciifolding, stemmers, ngram...).
 * GET / is the server's own RestMainAction.
 *
 * Unlike Elasticsearch, OpenSearch's Node has a protected constructor that takes plugin classes
 * (what the test framework's MockNode calls), so the test framework is not needed at all: no
 * MockNode (its mock services), no randomizedtesting on the classpath, nothing that believes it
 * runs inside a test.
 */
public final class OpenSearchNode {

    /** A production Node whose plugins are classes on the classpath instead of modules/ dirs. */
    static final class ClasspathPluginsNode extends Node {
        ClasspathPluginsNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: OpenSearchNode HOME_DIR");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        for (Path dir : List.of(home.resolve("data"), home.resolve("logs"), config)) {
            Files.createDirectories(dir);
        }
        try (InputStream in = OpenSearchNode.class.getResourceAsStream("/opensearch-node-log4j2.properties")) {
            Files.copy(in, config.resolve("log4j2.properties"), StandardCopyOption.REPLACE_EXISTING);
        }

        Settings settings = Settings.builder()
            .put("cluster.name", System.getProperty("opensearch.cluster.name", "datapipe-opensearch"))
            .put("node.name", "datapipe-opensearch-1")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("network.host", System.getProperty("opensearch.host", "127.0.0.1"))
            .put("http.port", System.getProperty("opensearch.http.port", "9201"))
            .put("transport.port", System.getProperty("opensearch.transport.port", "9301"))
            .put("discovery.type", "single-node")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // Small test disks must not flip indices to read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Let test teardown delete indices by wildcard (DELETE /test-*).
            .put("action.destructive_requires_name", false)
            .build();

        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> settings.get("node.name"));
        LogConfigurator.setNodeName(settings.get("node.name"));
        LogConfigurator.configure(env);

        Node node = new ClasspathPluginsNode(env, List.of(
            Netty4Plugin.class, PainlessPlugin.class, CommonAnalysisPlugin.class));
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "opensearch-node-shutdown"));

        try {
            node.start();
        } catch (Throwable e) {
            e.printStackTrace();
            System.err.println("opensearch node failed to start: " + e);
            System.exit(1); // runs the hook, which closes the node
        }
        closed.await(); // keep the JVM alive until SIGTERM/SIGINT runs the hook
    }
}
