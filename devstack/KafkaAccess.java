// Brings the broker's SCRAM users and ACLs to the spec that devstack/kafka_access.py writes.
//
// Run as a single-file program (java -cp 'libs/*' KafkaAccess.java CLIENT_PROPERTIES SPEC), one JVM for
// every user and ACL: the Python client (aiokafka) has no admin call for either. The spec has one
// item per line, tab-separated:
//   user   NAME  PASSWORD_FILE            a SCRAM-SHA-512 credential (created or reset to that password)
//   allow  PRINCIPAL  TOPIC|GROUP  NAME  OPERATION
// ACLs on the broker that the spec does not list are deleted, so the spec is the whole truth.
import java.io.FileInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAccess {
    public static void main(String[] args) throws Exception {
        Properties client = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            client.load(in);
        }
        List<UserScramCredentialAlteration> users = new ArrayList<>();
        Set<AclBinding> wanted = new HashSet<>();
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            String[] f = line.split("\t");
            if (f[0].equals("user")) {
                String password = Files.readString(Path.of(f[2])).strip();
                users.add(new UserScramCredentialUpsertion(
                    f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password));
            } else if (f[0].equals("allow")) {
                ResourcePattern resource = new ResourcePattern(ResourceType.fromString(f[2]), f[3], PatternType.LITERAL);
                AccessControlEntry entry = new AccessControlEntry(
                    "User:" + f[1], "*", AclOperation.fromString(f[4]), AclPermissionType.ALLOW);
                wanted.add(new AclBinding(resource, entry));
            }
        }
        try (Admin admin = Admin.create(client)) {
            if (!users.isEmpty()) {
                admin.alterUserScramCredentials(users).all().get();
            }
            Set<AclBinding> present = new HashSet<>(admin.describeAcls(AclBindingFilter.ANY).values().get());
            List<AclBindingFilter> stale = new ArrayList<>();
            for (AclBinding binding : present) {
                if (!wanted.contains(binding)) {
                    stale.add(binding.toFilter());
                }
            }
            List<AclBinding> missing = new ArrayList<>();
            for (AclBinding binding : wanted) {
                if (!present.contains(binding)) {
                    missing.add(binding);
                }
            }
            if (!stale.isEmpty()) {
                admin.deleteAcls(stale).all().get();
            }
            if (!missing.isEmpty()) {
                admin.createAcls(missing).all().get();
            }
            System.out.printf("users %d, acls %d (%d added, %d removed)%n",
                users.size(), wanted.size(), missing.size(), stale.size());
        }
    }
}
