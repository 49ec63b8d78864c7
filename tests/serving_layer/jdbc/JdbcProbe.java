import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Properties;

/** Drives the serving endpoint as JVM tools do: metadata (schemas, tables, columns), then queries.
 *  Prints one line per finding: "schema ...", "table ...", "column ...", "row ...". */
public class JdbcProbe {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        properties.setProperty("password", args[2]);
        properties.setProperty("sslmode", "disable");
        try (Connection connection = DriverManager.getConnection(args[0], properties)) {
            DatabaseMetaData meta = connection.getMetaData();
            System.out.println("product " + meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
            try (ResultSet schemas = meta.getSchemas()) {
                while (schemas.next()) System.out.println("schema " + schemas.getString("TABLE_SCHEM"));
            }
            try (ResultSet tables = meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (tables.next()) System.out.println("table " + tables.getString("TABLE_NAME") + " " + tables.getString("TABLE_TYPE"));
            }
            try (ResultSet columns = meta.getColumns(null, "public", args[3], "%")) {
                while (columns.next()) {
                    System.out.println("column " + columns.getString("COLUMN_NAME") + " " + columns.getString("TYPE_NAME")
                        + " " + columns.getInt("DATA_TYPE"));
                }
            }
            // past prepareThreshold (5) the driver switches to a named server-side statement and binary results
            try (PreparedStatement statement = connection.prepareStatement(args[4])) {
                for (int run = 0; run < 7; run++) {
                    statement.setLong(1, Long.parseLong(args[5]));
                    try (ResultSet rows = statement.executeQuery()) {
                        int count = rows.getMetaData().getColumnCount();
                        while (rows.next()) {
                            StringBuilder line = new StringBuilder("row " + run);
                            for (int i = 1; i <= count; i++) line.append(" ").append(rows.getObject(i));
                            System.out.println(line);
                        }
                    }
                }
            }
        }
    }
}
