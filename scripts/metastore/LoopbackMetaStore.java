// A Hive metastore service (Thrift) on one address, by default 127.0.0.1.
//
// Hive 2.3's HiveMetaStore.main binds its port on every interface and has no bind-address
// setting; this launcher builds the same handler and Thrift server, bound where it is told.
// Compiled against the jars that pyspark ships (scripts/metastore.sh does it once).
//
//   java -cp "<classes>:$SPARK_HOME/jars/*" -Dhive.metastore.warehouse.dir=... \
//        -Djavax.jdo.option.ConnectionURL=... LoopbackMetaStore 127.0.0.1 9083

import java.net.InetSocketAddress;

import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.RetryingHMSHandler;
import org.apache.hadoop.hive.metastore.TSetIpAddressProcessor;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.server.TServer;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransportFactory;

public final class LoopbackMetaStore {
  private LoopbackMetaStore() {}

  public static void main(String[] argv) throws Exception {
    String host = argv.length > 0 ? argv[0] : "127.0.0.1";
    int port = argv.length > 1 ? Integer.parseInt(argv[1]) : 9083;
    HiveConf conf = new HiveConf(LoopbackMetaStore.class);  // reads -D system properties
    HiveMetaStore.HMSHandler base = new HiveMetaStore.HMSHandler("sales_st metastore", conf, false);
    IHMSHandler handler = RetryingHMSHandler.getProxy(conf, base, false);
    TSetIpAddressProcessor<IHMSHandler> processor = new TSetIpAddressProcessor<>(handler);
    TServerSocket socket = new TServerSocket(new InetSocketAddress(host, port));
    TThreadPoolServer.Args args = new TThreadPoolServer.Args(socket)
        .processor(processor)
        .transportFactory(new TTransportFactory())
        .protocolFactory(new TBinaryProtocol.Factory())
        .inputProtocolFactory(new TBinaryProtocol.Factory())
        .minWorkerThreads(4)
        .maxWorkerThreads(64);
    TServer server = new TThreadPoolServer(args);
    System.out.println("metastore listening on " + host + ":" + port);
    System.out.flush();
    server.serve();
  }
}
