// Single-node HDFS + YARN for dev/tests, built on org.apache.hadoop:hadoop-client-minicluster:3.4.2.
//
// Usage: java --add-opens=java.base/java.lang=ALL-UNNAMED -cp 'jars/*' MiniHadoop.java <dir>
// Optional env: MINIHADOOP_NM_MEMORY_MB (8192), MINIHADOOP_NM_VCORES (4),
//               MINIHADOOP_MIN_ALLOC_MB (256), MINIHADOOP_HOST (127.0.0.1)
// Output: KEY=VALUE lines on stdout then "READY"; same lines in <dir>/ready (written atomically,
// removed on shutdown); <dir>/pid; client config in <dir>/conf; server logs in <dir>/logs.
// Stops cleanly on SIGTERM/SIGINT.
import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.logging.Level;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.service.Service;
import org.apache.hadoop.shaded.com.google.inject.servlet.GuiceFilter;
import org.apache.hadoop.shaded.org.eclipse.jetty.servlet.FilterHolder;
import org.apache.hadoop.util.ShutdownHookManager;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;
import org.apache.hadoop.yarn.server.nodemanager.NodeManager;
import org.apache.hadoop.yarn.server.nodemanager.webapp.WebServer;
import org.apache.hadoop.yarn.server.resourcemanager.ResourceManager;
import org.apache.hadoop.yarn.webapp.WebApp;
import org.apache.hadoop.yarn.webapp.util.WebAppUtils;

public class MiniHadoop {
  // Keep a strong reference, otherwise the JUL level setting can be garbage collected.
  static final java.util.logging.Logger JUL_ROOT = java.util.logging.Logger.getLogger("");

  // Test-only / server-only keys that must not leak into the client HADOOP_CONF_DIR.
  static final String[] CLIENT_CONF_DENY_PREFIXES = {
      "rpc.engine.", "hadoop.http.filter.initializers", "net.topology.node.switch.mapping.impl",
      "mapreduce.client.genericoptionsparser.used", "hdfs.minidfs.basedir", "yarn.is.minicluster",
      "yarn.minicluster.", "dfs.namenode.name.dir", "dfs.namenode.checkpoint.dir",
      "dfs.namenode.startup", "dfs.datanode.data.dir", "yarn.node-attribute.fs-store.root-dir",
      "yarn.timeline-service.", "hadoop.tmp.dir"};

  static int envInt(String k, int d) {
    String v = System.getenv(k);
    return v == null || v.isEmpty() ? d : Integer.parseInt(v);
  }

  public static void main(String[] args) {
    try {
      run(args);
    } catch (Throwable t) {
      // MiniDFSCluster/MiniYARNCluster leave non-daemon threads behind: exit explicitly on failure.
      t.printStackTrace();
      System.out.println("FAILED: " + t);
      System.out.flush();
      Runtime.getRuntime().halt(1);
    }
  }

  static void run(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: MiniHadoop <dir>");
      System.exit(2);
    }
    long t0 = System.nanoTime();
    File dir = new File(args[0]).getAbsoluteFile();
    File confDir = new File(dir, "conf");
    File logDir = new File(dir, "logs");
    File ready = new File(dir, "ready");
    File pidFile = new File(dir, "pid");
    ready.delete();
    confDir.mkdirs();
    logDir.mkdirs();
    String host = System.getenv().getOrDefault("MINIHADOOP_HOST", "127.0.0.1");
    int nmMem = envInt("MINIHADOOP_NM_MEMORY_MB", 8192);
    int nmVcores = envInt("MINIHADOOP_NM_VCORES", 4);
    int minAlloc = envInt("MINIHADOOP_MIN_ALLOC_MB", 256);
    String user = System.getProperty("user.name");
    String tmpDir = new File(dir, "tmp").getPath();

    // Server logs (log4j 1.x API via reload4j) -> <dir>/logs/minihadoop.log; stdout is reserved for
    // the KEY=VALUE lines. Must happen before any Hadoop class initialises log4j.
    if (System.getProperty("log4j.configuration") == null) {
      File l4j = new File(dir, "log4j.properties");
      Files.writeString(l4j.toPath(), String.join("\n",
          "log4j.rootLogger=INFO,F",
          "log4j.appender.F=org.apache.log4j.FileAppender",
          "log4j.appender.F.File=" + new File(logDir, "minihadoop.log").getPath(),
          "log4j.appender.F.Append=false",
          "log4j.appender.F.layout=org.apache.log4j.PatternLayout",
          "log4j.appender.F.layout.ConversionPattern=%d{ISO8601} %p [%t] %c{2}: %m%n",
          "log4j.logger.org.apache.hadoop.metrics2=WARN",
          "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN",
          "log4j.logger.BlockStateChange=WARN", ""));
      System.setProperty("log4j.configuration", l4j.toURI().toString());
    }
    JUL_ROOT.setLevel(Level.WARNING); // shaded Jersey/Guice log INFO spam to stderr through JUL
    // MiniYARNCluster puts its work dirs under GenericTestUtils.getTestDir() = ${test.build.data}
    // (default: ./target/test/data relative to the CWD) -> pin it inside <dir>.
    System.setProperty("test.build.data", new File(dir, "data").getPath());
    System.setProperty("hadoop.tmp.dir", tmpDir);
    Files.writeString(pidFile.toPath(), ProcessHandle.current().pid() + "\n");

    // ---------------- HDFS ----------------
    Configuration hconf = new HdfsConfiguration();
    hconf.set("hadoop.tmp.dir", tmpDir);
    hconf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(dir, "hdfs").getPath());
    hconf.setBoolean("dfs.permissions.enabled", false);
    hconf.setBoolean("dfs.webhdfs.enabled", true);
    hconf.setInt("dfs.replication", 1);
    hconf.set("dfs.namenode.rpc-bind-host", host);
    hconf.set("dfs.namenode.servicerpc-bind-host", host);
    hconf.set("dfs.namenode.http-bind-host", host);
    hconf.set("hadoop.proxyuser." + user + ".hosts", "*");
    hconf.set("hadoop.proxyuser." + user + ".groups", "*");
    MiniDFSCluster dfs = new MiniDFSCluster.Builder(hconf)
        .numDataNodes(1)
        .nameNodePort(0)      // 0 = pick a free port (NameNode RPC binds 127.0.0.1)
        .nameNodeHttpPort(0)
        .format(true)
        .build();
    dfs.waitActive();
    String fsDefault = "hdfs://" + host + ":" + dfs.getNameNodePort();
    String webhdfs = host + ":" + dfs.getNameNode().getHttpAddress().getPort();
    long tDfs = System.nanoTime();

    // ---------------- YARN ----------------
    // Fresh conf (not the DFS one: that carries MiniDFSCluster test settings such as the HDFS
    // AuthFilter initializer and StaticMapping).
    YarnConfiguration yconf = new YarnConfiguration();
    yconf.set("fs.defaultFS", fsDefault);
    yconf.set("hadoop.tmp.dir", tmpDir);
    yconf.set("hadoop.proxyuser." + user + ".hosts", "*");
    yconf.set("hadoop.proxyuser." + user + ".groups", "*");
    // MiniYARNCluster overwrites yarn.nodemanager.resource.memory-mb with this key (default 4096).
    yconf.setInt("yarn.minicluster.yarn.nodemanager.resource.memory-mb", nmMem);
    yconf.setInt("yarn.nodemanager.resource.memory-mb", nmMem);
    yconf.setInt("yarn.nodemanager.resource.cpu-vcores", nmVcores);
    yconf.setInt("yarn.scheduler.minimum-allocation-mb", minAlloc);
    yconf.setInt("yarn.scheduler.maximum-allocation-mb", nmMem);
    yconf.setInt("yarn.scheduler.minimum-allocation-vcores", 1);
    yconf.setInt("yarn.scheduler.maximum-allocation-vcores", nmVcores);
    yconf.setBoolean("yarn.nodemanager.pmem-check-enabled", false);
    yconf.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
    yconf.set("yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", "100.0");
    yconf.set("yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb", "0");
    yconf.set("yarn.resourcemanager.bind-host", host);
    yconf.set("yarn.nodemanager.bind-host", host);
    yconf.setBoolean("yarn.timeline-service.enabled", false);
    yconf.setBoolean("yarn.log-aggregation-enable", false);
    // keep finished containers' dirs/logs for 10 min (debugging: <dir>/data/<name>/...-logDir-nm-0_0)
    yconf.setInt("yarn.nodemanager.delete.debug-delay-sec", 600);
    // shorter NM stop: waits process-kill-wait + 2 s for "still running" apps (default 5 s)
    yconf.setInt("yarn.nodemanager.process-kill-wait.ms", 1000);
    // Containers run "$JAVA_HOME/bin/java": make sure JAVA_HOME reaches them even when the
    // process that started us did not export it.
    String javaHome = System.getenv("JAVA_HOME");
    if (javaHome == null || javaHome.isEmpty()) javaHome = System.getProperty("java.home");
    yconf.set("yarn.nodemanager.admin-env", "MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX,JAVA_HOME=" + javaHome);
    // capacity-scheduler.xml is not shipped in hadoop-client-minicluster: define the queue inline.
    yconf.set("yarn.scheduler.capacity.root.queues", "default");
    yconf.setInt("yarn.scheduler.capacity.root.default.capacity", 100);
    yconf.setInt("yarn.scheduler.capacity.root.default.maximum-capacity", 100);
    yconf.setFloat("yarn.scheduler.capacity.root.default.user-limit-factor", 1);
    yconf.set("yarn.scheduler.capacity.root.default.state", "RUNNING");
    yconf.set("yarn.scheduler.capacity.root.default.acl_submit_applications", "*");
    yconf.set("yarn.scheduler.capacity.root.default.acl_administer_queue", "*");
    // default 0.1 would only allow one AM at a time on an 8 GB node
    yconf.setFloat("yarn.scheduler.capacity.maximum-am-resource-percent", 0.5f);
    yconf.setInt("yarn.scheduler.capacity.node-locality-delay", -1);

    // RM ports are chosen up front ("fixed ports" mode). With port 0 the RM computes its embedded
    // web-proxy address before binding, so app tracking URLs (and the AmIpFilter redirect of the
    // Spark UI) would point to http://localhost:0/proxy/... . NM ports stay ephemeral.
    yconf.setBoolean("yarn.minicluster.fixed.ports", true);
    java.util.Set<Integer> used = new java.util.HashSet<>();
    for (String k : new String[] {YarnConfiguration.RM_ADDRESS, YarnConfiguration.RM_ADMIN_ADDRESS,
        YarnConfiguration.RM_SCHEDULER_ADDRESS, YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS,
        YarnConfiguration.RM_WEBAPP_ADDRESS}) {
      int port;
      do { port = freePort(host); } while (!used.add(port));
      yconf.set(k, host + ":" + port);
    }

    MiniYARNCluster yarn = new MiniYARNCluster("minihadoop-yarn", 1, 1, 1);
    yarn.init(yconf);
    yarn.start();
    Configuration ycfg = yarn.getConfig();
    for (int i = 0; i < 200 && ycfg.get(YarnConfiguration.RM_ADDRESS, "").endsWith(":0"); i++) {
      Thread.sleep(100);
    }
    if (!yarn.waitForNodeManagersToConnect(30000)) {
      throw new IllegalStateException("NodeManager did not register with the RM");
    }
    // RM and NM web apps share Guice's static GuiceFilter pipeline in one JVM: the last one
    // started (the NM) wins, so /ws/v1/cluster/* on the RM port answers 404. Point each Jetty
    // "guice" filter at its own injector-bound GuiceFilter instance.
    Field rmWebAppField = ResourceManager.class.getDeclaredField("webApp");
    rmWebAppField.setAccessible(true);
    pinGuiceFilter((WebApp) rmWebAppField.get(yarn.getResourceManager()));
    NodeManager nm = yarn.getNodeManager(0);
    for (Service s : nm.getServices()) {
      if (s instanceof WebServer) {
        Field f = WebServer.class.getDeclaredField("webApp");
        f.setAccessible(true);
        pinGuiceFilter((WebApp) f.get(s));
      }
    }
    long tYarn = System.nanoTime();

    // ---------------- client configuration ----------------
    // Merge the live configurations, keep entries that differ from the shipped defaults, drop
    // test/server-only keys, and rewrite "localhost:" (MiniYARNCluster's host) to the bind address.
    Configuration defaults = new YarnConfiguration(new HdfsConfiguration());
    // (Filter per source before merging: every Configuration also carries hdfs-default values, so a
    // plain merge would let the YARN conf reset e.g. dfs.replication back to 3.)
    TreeMap<String, String> merged = new TreeMap<>();
    for (Configuration src : new Configuration[] {dfs.getConfiguration(0), ycfg}) {
      for (Map.Entry<String, String> e : src) {
        if (!e.getValue().equals(defaults.getRaw(e.getKey()))) merged.put(e.getKey(), e.getValue());
      }
    }
    Configuration core = new Configuration(false), hdfs = new Configuration(false),
        yarnSite = new Configuration(false);
    outer:
    for (Map.Entry<String, String> e : merged.entrySet()) {
      String k = e.getKey(), v = e.getValue();
      for (String p : CLIENT_CONF_DENY_PREFIXES) if (k.startsWith(p)) continue outer;
      v = v.replace("localhost:", host + ":");
      if (k.startsWith("dfs.")) hdfs.set(k, v);
      else if (k.startsWith("yarn.")) yarnSite.set(k, v);
      else core.set(k, v);
    }
    core.set("fs.defaultFS", fsDefault);
    String rmWeb = WebAppUtils.getRMWebAppURLWithoutScheme(ycfg).replace("localhost:", host + ":");
    String rmAddr = ycfg.get(YarnConfiguration.RM_ADDRESS).replace("localhost:", host + ":");
    writeXml(core, new File(confDir, "core-site.xml"));
    writeXml(hdfs, new File(confDir, "hdfs-site.xml"));
    writeXml(yarnSite, new File(confDir, "yarn-site.xml"));

    List<String> kv = new ArrayList<>();
    kv.add("PID=" + ProcessHandle.current().pid());
    kv.add("HADOOP_CONF_DIR=" + confDir.getPath());
    kv.add("FS_DEFAULTFS=" + fsDefault);
    kv.add("WEBHDFS_ADDRESS=" + webhdfs);
    kv.add("WEBHDFS_URL=http://" + webhdfs + "/webhdfs/v1");
    kv.add("YARN_RM_ADDRESS=" + rmAddr);
    kv.add("YARN_RM_WEB_ADDRESS=" + rmWeb);
    kv.add("YARN_RM_REST_URL=http://" + rmWeb + "/ws/v1/cluster");
    kv.add(String.format("STARTUP_SECONDS=%.1f", (tYarn - t0) / 1e9));
    kv.add(String.format("STARTUP_HDFS_SECONDS=%.1f", (tDfs - t0) / 1e9));
    kv.add(String.format("STARTUP_YARN_SECONDS=%.1f", (tYarn - tDfs) / 1e9));
    String text = String.join("\n", kv) + "\n";

    // Stop sequence. Runs on the main thread after SIGTERM/SIGINT/SIGHUP (handled with
    // sun.misc.Signal, so Hadoop services are not stopped from inside a JVM shutdown hook, which
    // makes the DataNode throw "Shutdown in progress"); a Hadoop shutdown hook is the fallback
    // for any other JVM exit.
    java.util.concurrent.atomic.AtomicBoolean stopping = new java.util.concurrent.atomic.AtomicBoolean();
    Runnable stopAll = () -> {
      if (!stopping.compareAndSet(false, true)) return;
      ready.delete();
      killRunningApps(ycfg, nm);
      speedUpYarnStop(yarn, nm);
      try { yarn.stop(); } catch (Throwable t) { t.printStackTrace(); }
      try { dfs.shutdown(true); } catch (Throwable t) { t.printStackTrace(); }
      pidFile.delete();
    };
    // priority 100 > FileSystem cache-closing hook (10); explicit timeout (default is 30 s)
    ShutdownHookManager.get().addShutdownHook(stopAll, 100, 120, java.util.concurrent.TimeUnit.SECONDS);
    CountDownLatch stopRequested = new CountDownLatch(1);
    for (String sig : new String[] {"TERM", "INT", "HUP"}) {
      sun.misc.Signal.handle(new sun.misc.Signal(sig), x -> stopRequested.countDown());
    }

    File tmp = new File(dir, "ready.tmp");
    Files.writeString(tmp.toPath(), text, StandardCharsets.UTF_8);
    Files.move(tmp.toPath(), ready.toPath(), StandardCopyOption.ATOMIC_MOVE);
    System.out.print(text);
    System.out.println("READY");
    System.out.flush();
    stopRequested.await();
    long ts = System.nanoTime();
    stopAll.run();
    System.out.printf("STOPPED in %.1f s%n", (System.nanoTime() - ts) / 1e9);
    System.out.flush();
    System.exit(0);
  }

  // Kill unfinished apps through the RM before stopping: containers (separate JVMs, own sessions)
  // are then reaped by the NM, and spark-submit clients see KILLED instead of retrying a dead RM.
  static void killRunningApps(Configuration conf, NodeManager nm) {
    try (org.apache.hadoop.yarn.client.api.YarnClient yc =
             org.apache.hadoop.yarn.client.api.YarnClient.createYarnClient()) {
      yc.init(conf);
      yc.start();
      java.util.EnumSet<org.apache.hadoop.yarn.api.records.YarnApplicationState> live =
          java.util.EnumSet.of(org.apache.hadoop.yarn.api.records.YarnApplicationState.NEW,
              org.apache.hadoop.yarn.api.records.YarnApplicationState.NEW_SAVING,
              org.apache.hadoop.yarn.api.records.YarnApplicationState.SUBMITTED,
              org.apache.hadoop.yarn.api.records.YarnApplicationState.ACCEPTED,
              org.apache.hadoop.yarn.api.records.YarnApplicationState.RUNNING);
      List<org.apache.hadoop.yarn.api.records.ApplicationReport> apps = yc.getApplications(live);
      for (org.apache.hadoop.yarn.api.records.ApplicationReport r : apps) {
        yc.killApplication(r.getApplicationId());
      }
      long deadline = System.currentTimeMillis() + 15000;
      while (!nm.getNMContext().getContainers().isEmpty() && System.currentTimeMillis() < deadline) {
        Thread.sleep(200);
      }
      if (!apps.isEmpty()) Thread.sleep(1000); // let clients poll the final KILLED state
    } catch (Throwable t) {
      t.printStackTrace();
    }
  }

  // Avoid ~15 s of pure waiting in yarn.stop() once no container is left:
  //  - MiniYARNCluster waits 5 s for AMs that never unregistered (killed AMs never do);
  //  - NonAggregatingLogHandler waits 10 s for its pending (3 h delayed) log-deletion tasks.
  static void speedUpYarnStop(MiniYARNCluster yarn, NodeManager nm) {
    try {
      Field am = MiniYARNCluster.class.getDeclaredField("appMasters");
      am.setAccessible(true);
      ((Map<?, ?>) am.get(yarn)).clear();
      for (Service s : nm.getServices()) {
        if (!(s instanceof org.apache.hadoop.service.CompositeService)) continue;
        for (Service c : ((org.apache.hadoop.service.CompositeService) s).getServices()) {
          if (c instanceof org.apache.hadoop.yarn.server.nodemanager.containermanager.loghandler
              .NonAggregatingLogHandler) {
            Field f = c.getClass().getDeclaredField("sched");
            f.setAccessible(true);
            ((java.util.concurrent.ScheduledThreadPoolExecutor) f.get(c))
                .setExecuteExistingDelayedTasksAfterShutdownPolicy(false);
          }
        }
      }
    } catch (Throwable t) {
      t.printStackTrace();
    }
  }

  static int freePort(String host) throws Exception {
    try (java.net.ServerSocket ss = new java.net.ServerSocket(0, 1, java.net.InetAddress.getByName(host))) {
      return ss.getLocalPort();
    }
  }

  static void pinGuiceFilter(WebApp webApp) throws Exception {
    Field gf = WebApp.class.getDeclaredField("guiceFilter");
    gf.setAccessible(true);
    GuiceFilter injected = (GuiceFilter) gf.get(webApp);
    FilterHolder holder =
        webApp.getHttpServer().getWebAppContext().getServletHandler().getFilter("guice");
    Field f = FilterHolder.class.getDeclaredField("_filter");
    f.setAccessible(true);
    f.set(holder, injected);
  }

  static void writeXml(Configuration c, File f) throws Exception {
    File tmp = new File(f.getPath() + ".tmp");
    try (OutputStream os = new FileOutputStream(tmp)) {
      c.writeXml(os);
    }
    Files.move(tmp.toPath(), f.toPath(), StandardCopyOption.REPLACE_EXISTING,
        StandardCopyOption.ATOMIC_MOVE);
  }
}
