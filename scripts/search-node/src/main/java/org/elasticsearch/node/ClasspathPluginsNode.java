package org.elasticsearch.node;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.Collection;

/**
 * A production Node whose plugins (modules) are classes on the classpath instead of directories
 * under modules/ and plugins/. It lives in org.elasticsearch.node because NodeServiceProvider and
 * NodeConstruction are package-private. Unlike the test framework's MockNode it does not touch
 * ESTestCase (whose static init bootstraps natives and refuses to run as root) and swaps in no
 * mock services: the framework's MockPluginsService is borrowed only to instantiate the plugins.
 */
public class ClasspathPluginsNode extends Node {

    public ClasspathPluginsNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        super(NodeConstruction.prepareConstruction(environment, null, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, PluginsLoader pluginsLoader) {
                return new MockPluginsService(env.settings(), env, plugins);
            }
        }, true));
    }
}
