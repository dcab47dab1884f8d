package dev.datapipe;

import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.ClasspathPluginsNode;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Runs one real Elasticsearch node inside this JVM: HTTP on 127.0.0.1, single-node discovery,
 * no security, all state under the directory given as the only argument.
 *
 *   java [-Dsearch.http.port=9200] [-Dsearch.transport.port=9300] -jar search-node.jar HOME_DIR
 *
 * Of the distribution's modules only transport-netty4 (HTTP + transport) is published to Maven
 * Central, so the node has the server's built-in features and nothing from the other modules
 * (no painless scripting, no analysis-common analyzers/filters, no reindex/update_by_query/
 * delete_by_query, no mapper-extras types). GET/HEAD / come from RootInfoHandler.
 */
public final class SearchNode {

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: SearchNode HOME_DIR");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        for (Path dir : List.of(home.resolve("data"), home.resolve("logs"), config)) {
            Files.createDirectories(dir);
        }
        try (InputStream in = SearchNode.class.getResourceAsStream("/search-node-log4j2.properties")) {
            Files.copy(in, config.resolve("log4j2.properties"), StandardCopyOption.REPLACE_EXISTING);
        }

        Settings settings = Settings.builder()
            .put("cluster.name", System.getProperty("search.cluster.name", "datapipe-search"))
            .put("node.name", "datapipe-search-1")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("network.host", System.getProperty("search.host", "127.0.0.1"))
            .put("http.port", System.getProperty("search.http.port", "9200"))
            .put("transport.port", System.getProperty("search.transport.port", "9300"))
            .put("discovery.type", "single-node")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // Small test disks must not flip indices to read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Let test teardown delete indices by wildcard (DELETE /test-*); ES 8+ refuses by default.
            .put("action.destructive_requires_name", false)
            .build();

        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> settings.get("node.name"));
        LogConfigurator.setNodeName(settings.get("node.name"));
        LogConfigurator.setClusterName(settings.get("cluster.name"));
        LogConfigurator.configure(env, true);

        Node node = new ClasspathPluginsNode(env, List.of(Netty4Plugin.class));
        node.injector().getInstance(RestController.class)
            .registerHandler(new RootInfoHandler(node.injector().getInstance(ClusterService.class)));
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
        }, "search-node-shutdown"));

        try {
            node.start();
        } catch (Throwable e) {
            e.printStackTrace();
            System.err.println("search node failed to start: " + e);
            System.exit(1); // runs the hook, which closes the node
        }
        closed.await(); // keep the JVM alive until SIGTERM/SIGINT runs the hook
    }
}
